//! The handlers, one per route (the list is in the module docs of `api`).

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path as UrlPath, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::{ApiError, App, Authed, data, ok, read_body, view};
use crate::config::ServiceConfig;
use crate::config::chain::{ChainConfig, HopConfig};
use crate::daemon::state::Section;
use crate::daemon::{self, EditError, lock};

pub(super) fn routes(p: &str) -> Router<App> {
    let mut r = Router::new()
        .route(&format!("{p}/"), get(super::page::page))
        .route(&format!("{p}/status"), get(status))
        .route(&format!("{p}/login"), get(login))
        .route(&format!("{p}/config"), get(get_config).post(save_config))
        .route(&format!("{p}/config/reload"), post(reload))
        .merge(objects::<ServiceConfig>(p))
        .merge(objects::<ChainConfig>(p))
        .merge(objects::<HopConfig>(p))
        .route(&format!("{p}/failover"), get(failover))
        .route(&format!("{p}/failover/standby"), post(standby))
        .route(&format!("{p}/failover/active"), post(active));
    if !p.is_empty() {
        r = r.route(p, get(super::page::page));
    }
    r
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FormatQuery {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    path: Option<String>,
}

/// `json` (the default) or `yaml`.
fn format(q: &FormatQuery, default: &str) -> Result<&'static str, ApiError> {
    match q.format.as_deref().unwrap_or(default) {
        "json" => Ok("json"),
        "yaml" | "yml" => Ok("yaml"),
        other => Err(ApiError::invalid(format!(
            "format: {other:?}: expected json or yaml"
        ))),
    }
}

fn query(
    q: Result<Query<FormatQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<FormatQuery, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::invalid(format!("query: {}", e.body_text())))
}

/// Needs the credentials like every non-public route: the browser asks for them
/// once, then sends them with the page's requests too.
async fn login(State(app): State<App>) -> Response {
    axum::response::Redirect::to(&format!("{}/", app.cfg.path_prefix)).into_response()
}

async fn status(State(app): State<App>, Extension(Authed(authed)): Extension<Authed>) -> Response {
    let st = app.ctx.failover.as_ref().map(|rx| rx.borrow().clone());
    let d = lock(&app.ctx.daemon);
    data(view::summary(
        &d,
        st.as_ref(),
        authed,
        app.cfg.auth.is_some(),
    ))
}

async fn failover(State(app): State<App>) -> Result<Response, ApiError> {
    let Some(rx) = &app.ctx.failover else {
        return Err(ApiError::not_found(
            "failover: floating_ip is not enabled on this node",
        ));
    };
    let st = rx.borrow().clone();
    Ok(data(view::failover(&st)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceQuery {
    #[serde(default)]
    force: bool,
}

/// `POST /failover/standby[?force=true]`: release the VIP to the peer and stay
/// backup until `POST /failover/active`. Refused (409, 40003) unless a healthy
/// peer is heard, or forced. A master with a secret hands its connections over
/// first (they are served to their end); the answer comes once the VIP moved.
async fn standby(
    State(app): State<App>,
    q: Result<Query<ForceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let force = force(q)?;
    let c = control(&app)?;
    let st = c.standby(force).await.map_err(control_error)?;
    tracing::info!(force, "standby requested through the API");
    Ok(data(view::failover(&st)))
}

/// `POST /failover/active[?force=true]`: take part in the election again.
/// Refused (409, 40003) while the node still serves the connections it handed
/// over on standby, unless forced (they are cut).
async fn active(
    State(app): State<App>,
    q: Result<Query<ForceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let force = force(q)?;
    let c = control(&app)?;
    let st = c.active(force).await.map_err(control_error)?;
    tracing::info!(force, "active requested through the API");
    Ok(data(view::failover(&st)))
}

/// `?force=true` of the failover commands.
fn force(
    q: Result<Query<ForceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<bool, ApiError> {
    q.map(|Query(q)| q.force)
        .map_err(|e| ApiError::invalid(format!("query: {}", e.body_text())))
}

fn control(app: &App) -> Result<crate::failover::driver::Control, ApiError> {
    app.ctx
        .control
        .clone()
        .ok_or_else(|| ApiError::not_found("failover: floating_ip is not enabled on this node"))
}

fn control_error(e: crate::failover::driver::ControlError) -> ApiError {
    ApiError {
        status: axum::http::StatusCode::CONFLICT,
        code: 40003,
        msg: format!("failover: {e}"),
    }
}

/// `GET /config`: the running configuration as written, secrets masked, each
/// service with its live `status`. Not wrapped in `data` (as GOST).
async fn get_config(
    State(app): State<App>,
    q: Result<Query<FormatQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let fmt = format(&q, "json")?;
    let mut doc = {
        let d = lock(&app.ctx.daemon);
        let mut doc = d.document();
        view::mask(&mut doc);
        if let serde_json::Value::Object(m) = &mut doc
            && m.contains_key("services")
        {
            m.insert(
                "services".into(),
                serde_json::Value::Array(view::objects::<ServiceConfig>(&d)),
            );
        }
        doc
    };
    if fmt == "yaml" {
        let text = daemon::state::to_yaml(&doc).map_err(|e| ApiError {
            status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            code: 40005,
            msg: e,
        })?;
        return Ok(([(header::CONTENT_TYPE, "text/yaml; charset=utf-8")], text).into_response());
    }
    Ok(axum::Json(std::mem::take(&mut doc)).into_response())
}

/// `POST /config?format=yaml&path=…`: write the running configuration (secrets
/// included: it must start again as it runs) to `path`, by default the file it
/// was loaded from. Atomic: written beside the target, synced, renamed over it.
async fn save_config(
    State(app): State<App>,
    q: Result<Query<FormatQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let (doc, config_path) = {
        let d = lock(&app.ctx.daemon);
        (d.document(), d.path().to_path_buf())
    };
    let target = match &q.path {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => config_path.clone(),
    };
    let default_fmt = if target.extension().is_some_and(|e| e == "json") {
        "json"
    } else {
        "yaml"
    };
    let fmt = format(&q, default_fmt)?;
    allowed(&target, &config_path, &app.cfg.save_dirs)?;
    let text = match fmt {
        "json" => serde_json::to_string_pretty(&doc).map_err(|e| e.to_string()),
        _ => daemon::state::to_yaml(&doc),
    }
    .map_err(EditError::Save)?;
    // What is written must load again: checked before it replaces anything.
    crate::config::Config::from_str_named(&text, &target)
        .map_err(|e| EditError::Save(format!("the running config does not read back: {e}")))?;
    write_atomic(&target, text.as_bytes())
        .map_err(|e| EditError::Save(format!("{}: {e}", target.display())))?;
    tracing::info!(path = %target.display(), "running configuration saved through the API");
    Ok(ok())
}

/// Refuse a path outside the config file's directory and `saveDirs`.
fn allowed(target: &Path, config: &Path, extra: &[PathBuf]) -> Result<(), ApiError> {
    let dir_of = |p: &Path| {
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
        parent.unwrap_or(Path::new(".")).canonicalize()
    };
    let dir = dir_of(target)
        .map_err(|e| ApiError::invalid(format!("path: {}: {e}", target.display())))?;
    if target.file_name().is_none() || target.is_dir() {
        return Err(ApiError::invalid(format!(
            "path: {}: expected a file name",
            target.display()
        )));
    }
    let mut ok_dirs: Vec<PathBuf> = dir_of(config).into_iter().collect();
    ok_dirs.extend(extra.iter().filter_map(|d| d.canonicalize().ok()));
    if ok_dirs.contains(&dir) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "path: {}: outside the config file's directory; add its directory to api.saveDirs to allow it",
            target.display()
        )))
    }
}

/// Write to a temporary file beside `target` (mode 0600: it holds secrets),
/// sync it, and rename it over `target`.
fn write_atomic(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = target.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

async fn reload(State(app): State<App>) -> Result<Response, ApiError> {
    app.ctx.daemon.reload_file().await?;
    Ok(ok())
}

/// `GET|POST /config/{services,chains,hops}` and `GET|PUT|DELETE …/{name}`.
fn objects<T: Section + Send + 'static>(p: &str) -> Router<App> {
    Router::new()
        .route(
            &format!("{p}/config/{}", T::KEY),
            get(list_objects::<T>).post(add_object::<T>),
        )
        .route(
            &format!("{p}/config/{}/{{name}}", T::KEY),
            get(get_object::<T>)
                .put(put_object::<T>)
                .delete(delete_object::<T>),
        )
}

async fn list_objects<T: Section>(State(app): State<App>) -> Response {
    let d = lock(&app.ctx.daemon);
    let list = view::objects::<T>(&d);
    data(serde_json::json!({ "count": list.len(), "list": list }))
}

async fn get_object<T: Section>(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ApiError> {
    let d = lock(&app.ctx.daemon);
    let raw = (d.objects::<T>().into_iter()).find(|(n, _)| *n == name);
    match raw {
        Some((_, r)) => Ok(data(view::object::<T>(&d, &name, &r))),
        None => Err(EditError::NotFound(format!("{} {name:?} not found", T::NOUN)).into()),
    }
}

async fn add_object<T: Section>(State(app): State<App>, body: Body) -> Result<Response, ApiError> {
    let body = read_body(body).await?;
    app.ctx.daemon.add::<T>(body.to_vec()).await?;
    Ok(ok())
}

async fn put_object<T: Section>(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(body).await?;
    app.ctx.daemon.replace::<T>(name, body.to_vec()).await?;
    Ok(ok())
}

async fn delete_object<T: Section>(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ApiError> {
    app.ctx.daemon.delete::<T>(name).await?;
    Ok(ok())
}
