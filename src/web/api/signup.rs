//! `POST /api/v1/signup`: the signup form for custom front-ends, with no token, through exactly
//! the path the form takes (honeypot, limits, validation, double opt-in, evidence).

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Problem;
use super::json::ApiJson;
use crate::domain::Door;
use crate::signup::{SignupOutcome, SignupRequest, sign_up};
use crate::web::AppState;
use crate::web::client_ip::ClientIp;
use crate::web::error::AppError;
use crate::web::extract::user_agent;

/// What a person typed into your form.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupBody {
    /// Checked by the same parser as the signup form.
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// The honeypot: a field your form hides from people. Send what it holds (nothing, for a
    /// person); a signup that fills it in is answered as usual and stored nowhere.
    #[serde(default)]
    website: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SignupAnswer {
    /// `pending`: a confirmation link is on its way (double opt-in); `confirmed`: on the list.
    /// The same whether or not the address was on the list before.
    status: SignupStatus,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignupStatus {
    Pending,
    Confirmed,
}

#[utoipa::path(
    post, path = "/signup", tag = "signup",
    operation_id = "signUp",
    request_body = SignupBody,
    responses(
        (status = 200, description = "Signed up (or asked to confirm)", body = SignupAnswer),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Sent by a browser from a site not in --allowed-origins", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an address we accept, or an unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many signups from this client or of this address", body = Problem, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn signup(
    State(app): State<AppState>,
    Extension(ClientIp(client)): Extension<ClientIp>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SignupBody>,
) -> Result<Json<SignupAnswer>, AppError> {
    let request = SignupRequest {
        client,
        user_agent: user_agent(&headers),
        door: Door::Api,
        email: &body.email,
        honeypot: body.website.as_deref().unwrap_or_default(),
    };
    let status = match sign_up(app.store.as_ref(), &app.limits, &app.signups, request).await {
        Ok(SignupOutcome::Listed(_)) => SignupStatus::Confirmed,
        Ok(SignupOutcome::AwaitingConfirmation(_)) => SignupStatus::Pending,
        // A bot gets the answer a person would.
        Ok(SignupOutcome::Trapped) if app.signups.double_opt_in.is_some() => SignupStatus::Pending,
        Ok(SignupOutcome::Trapped) => SignupStatus::Confirmed,
        Err(error) => return Err(AppError::from_signup(error, String::new())),
    };
    Ok(Json(SignupAnswer { status }))
}
