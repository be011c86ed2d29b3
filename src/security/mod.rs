//! Password hashing, the admin credential, the installation's secret key, the tokens in mailed
//! links, and abuse limits.

mod admin_credential;
mod api_token;
mod limits;
mod links;
mod password;
pub mod random;
mod secret_key;

pub use admin_credential::{
    AdminCredential, AdminCredentials, CredentialCheck, resolve_admin_credential,
};
pub use api_token::{api_token_hash, new_api_token};
pub use limits::{Limits, Rate, TooMany};
pub use links::{LinkToken, Links, new_nonce};
pub use password::{
    PasswordHash, PasswordHashError, generate_password, hash_password, verify_password,
};
pub use secret_key::{SecretKey, SecretKeyError};
