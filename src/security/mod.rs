//! Password hashing, the admin credential, and the installation's secret key.

mod admin_credential;
mod password;
mod secret_key;

pub use admin_credential::{AdminCredential, resolve_admin_credential};
pub use password::{
    PasswordHash, PasswordHashError, generate_password, hash_password, verify_password,
};
pub use secret_key::{SecretKey, SecretKeyError};
