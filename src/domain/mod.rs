//! Types that can only hold valid values. Everything a client or an operator sends is parsed into
//! one of these at the edge, so the rest of the code never re-checks.

mod admin_password;
pub mod announcement;
mod consent;
mod rfc3339;
mod search_term;
mod subscriber_email;
mod token_name;

pub use admin_password::{AdminPassword, AdminPasswordError, MAX_PASSWORD_BYTES};
pub use announcement::{
    AnnouncementAction, AnnouncementState, AnnouncementText, AnnouncementTextError,
    MAX_SUBJECT_CHARS,
};
pub use consent::{ClientEvidence, Door, Evidence, SubscriberStatus};
pub use rfc3339::Rfc3339;
pub use search_term::{SearchTerm, SearchTermError};
pub use subscriber_email::{EmailError, SubscriberEmail};
pub use token_name::{TokenName, TokenNameError};
