//! Every one-time message a person reads after an action, in one place, so a translation is a
//! drop-in rather than a hunt through handlers. (Pages and mails speak through templates.)

use crate::domain::{AnnouncementAction, SubscriberEmail};
use crate::session::Notice;
use crate::signup::CONFIRMATIONS_PER_ADDRESS;

pub fn unregistered(email: &SubscriberEmail) -> Notice {
    Notice::success(format!("We have removed {email} from the list!"))
}

pub fn not_on_the_list() -> Notice {
    Notice::error("That address isn't on our list")
}

pub fn no_address_yet() -> Notice {
    Notice::error("You haven't submitted an email!")
}

/// An Unregister from a browser still waiting for confirmation, when the address is no longer
/// pending: the browser may not belong to the address's owner, so it may not remove a
/// confirmed subscription.
pub fn no_longer_pending(email: &SubscriberEmail) -> Notice {
    Notice::error(format!(
        "{email} isn't waiting for confirmation any more. To leave the list, use the unsubscribe \
         link at the bottom of any mail from us."
    ))
}

/// The same words whether a link was queued, the address is already confirmed, or its daily
/// limit is reached: the page must not tell a stranger which.
pub fn confirmation_resent(email: &SubscriberEmail) -> Notice {
    Notice::success(format!(
        "If {email} still needs confirming, a new link is on its way. (We send at most \
         {CONFIRMATIONS_PER_ADDRESS} links a day to one address.)"
    ))
}

pub fn resend_throttled(wait: &str) -> Notice {
    Notice::error(format!("Too many requests from your network. Please try again in {wait}."))
}

pub fn admin_removed(email: &str) -> Notice {
    Notice::success(format!("We have removed {email} from the list."))
}

pub fn admin_not_on_list(email: &str) -> Notice {
    Notice::error(format!("{email} isn't on the list."))
}

pub fn admin_resent(email: &str) -> Notice {
    Notice::success(format!("A new confirmation link to {email} is queued."))
}

pub fn admin_resend_limited(email: &str) -> Notice {
    Notice::error(format!(
        "{email} has had {CONFIRMATIONS_PER_ADDRESS} confirmation links in the last 24 hours; \
         no more are sent until the oldest is a day old."
    ))
}

pub fn admin_already_confirmed(email: &str) -> Notice {
    Notice::error(format!("{email} is already confirmed."))
}

pub fn admin_no_mail() -> Notice {
    Notice::error("Mail is not configured, so there is nothing to send a link with.")
}

pub fn admin_added(email: &str, pending: bool) -> Notice {
    if pending {
        Notice::success(format!("{email} is added as pending; a confirmation link is queued."))
    } else {
        Notice::success(format!("{email} is added to the list."))
    }
}

pub fn admin_already_listed(email: &str) -> Notice {
    Notice::error(format!("{email} is already on the list."))
}

pub fn admin_suppressed(email: &str) -> Notice {
    Notice::error(format!(
        "{email} left the list, so it cannot be added back; only the person can return, by \
         signing up again."
    ))
}

pub fn admin_removed_many(removed: u64) -> Notice {
    match removed {
        0 => Notice::error("None of those addresses are on the list any more."),
        1 => Notice::success("We have removed 1 address from the list."),
        n => Notice::success(format!("We have removed {n} addresses from the list.")),
    }
}

pub fn admin_none_selected() -> Notice {
    Notice::error("No addresses were selected.")
}

pub fn token_name_taken(name: &str) -> String {
    format!("A token named {name} exists already. Choose another name, or revoke that one first.")
}

pub fn token_revoked(name: &str) -> Notice {
    Notice::success(format!("The token {name} is revoked; it no longer works."))
}

pub fn no_such_token(name: &str) -> Notice {
    Notice::error(format!("There is no token named {name}."))
}

/// "6 seconds", "3 minutes": how long to wait, rounded up, in words.
pub fn wait_in_words(wait: std::time::Duration) -> String {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    match seconds {
        0..=1 => "a second".into(),
        2..=90 => format!("{seconds} seconds"),
        _ => format!("{} minutes", seconds.div_ceil(60)),
    }
}

pub fn signup_throttled(by_address: bool, wait: &str) -> String {
    if by_address {
        format!("This address was signed up several times recently. Please try again in {wait}.")
    } else {
        format!("Too many signups from your network. Please try again in {wait}.")
    }
}

pub fn login_throttled(wait: &str) -> String {
    format!("Too many failed logins. Please wait {wait} and try again.")
}

pub const WRONG_PASSWORD: &str = "That password is not right.";
pub const METRICS_REFUSED: &str = "The metrics are served to loopback clients only. To read them from \
     elsewhere, start the server with --metrics-token (and send it as a bearer token) or \
     --metrics-bind.";

pub fn webhook_refused(reason: &str) -> String {
    format!("That webhook URL cannot be used: {reason}.")
}

pub fn webhook_ping_queued() -> Notice {
    Notice::success(
        "A webhook.ping is on its way; its attempt appears below within a few seconds (reload).",
    )
}

pub fn webhook_disabled() -> Notice {
    Notice::error("This endpoint is disabled: remove it and add it again to send to it.")
}

pub fn webhook_removed() -> Notice {
    Notice::success("The webhook endpoint is removed, with its queued deliveries.")
}

pub fn announcement_saved() -> Notice {
    Notice::success("Saved. Check the preview, send yourself a test, then send it.")
}

pub fn announcement_test_queued(email: &str) -> Notice {
    Notice::success(format!("A test is on its way to {email}, and to nobody else."))
}

pub fn announcement_sending() -> Notice {
    Notice::success("Sending. This page shows the progress as it goes.")
}

pub fn announcement_changed(action: AnnouncementAction) -> Notice {
    Notice::success(match action {
        AnnouncementAction::Pause => "Paused: no more mails go out until you resume.",
        AnnouncementAction::Resume => "Resumed.",
        AnnouncementAction::Cancel => "Cancelled: nobody else will receive it.",
    })
}

pub const ANNOUNCEMENT_NOT_A_DRAFT: &str =
    "This announcement has been sent (or is being sent); it can only be sent once.";
pub const ANNOUNCEMENT_WRONG_STATE: &str =
    "That cannot be done to this announcement in its present state.";
pub const MAIL_OFF: &str = "Mail is not configured (--smtp-url), so nothing can be sent.";

/// "about 40 seconds", "about 3 minutes", "about 2 hours": a time left, roughly.
pub fn duration_in_words(seconds: i64) -> String {
    match seconds {
        ..=1 => "a second or so".into(),
        2..=90 => format!("about {seconds} seconds"),
        91..=5400 => format!("about {} minutes", (seconds + 59) / 60),
        _ => format!("about {} hours", (seconds + 1799) / 3600),
    }
}
