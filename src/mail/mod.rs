//! Mail: composing messages from templates, and handing them to a relay or a directory.
//! Nothing here decides *when* a mail goes; that is the outbox's job.

mod compose;
pub mod markdown;
mod smtp;
mod transport;

pub use compose::{AnnouncementContent, Composed, Composer, Preview, preview};
pub use transport::{CONNECTIONS, Mailer, SEND_TIMEOUT, SendFailure};
