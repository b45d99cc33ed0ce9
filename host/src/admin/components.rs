//! `/admin/components/...`: deploy, list, delete and roll back components, through the
//! host's [`Deployer`].

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, State};
use axum::response::{IntoResponse, Response};
use http::{Request, StatusCode, header};

use crate::deploy::{DeployError, DeploySpec, Deployer, parse_query};
use crate::triggers::http::{ApiError, read_body};

/// Room for the multipart framing and the spec beyond the component's own bytes.
const BODY_SLACK: u64 = 1 << 20;

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        let status = match &e {
            DeployError::Invalid(_) => StatusCode::BAD_REQUEST,
            DeployError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            DeployError::Conflict(_) | DeployError::NoPrevious(_) => StatusCode::CONFLICT,
            DeployError::NotFound(_) => StatusCode::NOT_FOUND,
            DeployError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            DeployError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut api = ApiError::new(status, e.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            api.retry_after = Some(1);
        }
        api
    }
}

/// `PUT /admin/components/{name}`: the wasm bytes as the body with settings in the query,
/// or `multipart/form-data` with parts `wasm` and `spec` (JSON).
pub async fn deploy(
    State(deployer): State<Arc<Deployer>>,
    Path(name): Path<String>,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let limit = deployer.max_component_size() + BODY_SLACK;
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let (parts, body) = request.into_parts();
    let (bytes, spec) = if multipart {
        let body = read_body(body, limit).await?;
        let request = Request::from_parts(parts, Body::from(body));
        from_multipart(request).await?
    } else {
        let spec = parse_query(parts.uri.query().unwrap_or(""))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
        (read_body(body, limit).await?.to_vec(), spec)
    };
    if bytes.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "no component: send the wasm bytes as the body, or a multipart part `wasm`",
        ));
    }
    let report = deployer.deploy(&name, bytes, spec).await?;
    let status = if report.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(report)).into_response())
}

async fn from_multipart(request: Request<Body>) -> Result<(Vec<u8>, DeploySpec), ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| bad(format!("malformed multipart body: {e}")))?;
    let (mut wasm, mut spec) = (None, None);
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| bad(format!("malformed multipart body: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let data = field
            .bytes()
            .await
            .map_err(|e| bad(format!("reading part `{name}`: {e}")))?;
        match name.as_str() {
            "wasm" => wasm = Some(data.to_vec()),
            "spec" => {
                spec = Some(
                    serde_json::from_slice::<DeploySpec>(&data)
                        .map_err(|e| bad(format!("part `spec`: {e}")))?,
                )
            }
            other => {
                return Err(bad(format!(
                    "unknown multipart part `{other}` (expected `wasm` and `spec`)"
                )));
            }
        }
    }
    let wasm = wasm.ok_or_else(|| bad("multipart body without a `wasm` part".into()))?;
    Ok((wasm, spec.unwrap_or_default()))
}

/// `GET /admin/components`.
pub async fn list(State(deployer): State<Arc<Deployer>>) -> Response {
    Json(serde_json::json!({ "components": deployer.list().await })).into_response()
}

/// `DELETE /admin/components/{name}`.
pub async fn delete(
    State(deployer): State<Arc<Deployer>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    deployer.delete(&name).await?;
    Ok(Json(serde_json::json!({ "deleted": name })).into_response())
}

/// `POST /admin/components/{name}/rollback`.
pub async fn rollback(
    State(deployer): State<Arc<Deployer>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let report = deployer.rollback(&name).await?;
    Ok(Json(report).into_response())
}
