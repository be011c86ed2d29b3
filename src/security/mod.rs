//! Password hashing, the admin credential, the installation's secret key, and abuse limits.

mod admin_credential;
mod limits;
mod password;
mod secret_key;

pub use admin_credential::{
    AdminCredential, AdminCredentials, CredentialCheck, resolve_admin_credential,
};
pub use limits::{Limits, Rate, TooMany};
pub use password::{
    PasswordHash, PasswordHashError, generate_password, hash_password, verify_password,
};
pub use secret_key::{SecretKey, SecretKeyError};
