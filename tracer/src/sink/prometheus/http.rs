//! `memstall serve`: the HTTP side of the Prometheus exporter. `GET /metrics` renders the
//! metrics the [`PrometheusSink`] keeps up to date; the server runs on the tracer's own tokio
//! runtime, beside the event loop, and ends with it (SIGINT/SIGTERM, `--duration`).
use std::{
    convert::Infallible,
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use super::{Metrics, PrometheusSink, SharedMetrics};
use crate::{
    error::UserError,
    kernel::attach::HookStatus,
    pipeline::Sink,
    sink::{self, prometheus},
    term,
};

/// Where `memstall serve` listens unless told otherwise: loopback, Prometheus exporter port
/// range.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// How often interval summaries fold into the metrics when `--interval` is not given.
pub const DEFAULT_FOLD_INTERVAL: Duration = Duration::from_secs(5);

/// A client gets this long to send its request headers (a slow-loris sending a byte a
/// second is cut off here) ...
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// ... and this long for the whole exchange (one that never reads its answer, too).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more are closed at once. Prometheus needs one per scrape.
pub const MAX_CONNECTIONS: usize = 32;
/// The most a request may send before it is answered (hyper's smallest read buffer): a GET
/// needs a few hundred bytes.
const MAX_REQUEST_BYTES: usize = 8192;

/// A bound listener and the metrics it serves.
pub struct Exporter {
    listener: TcpListener,
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
    metrics: SharedMetrics,
}

impl Exporter {
    /// Binds `addr` at once, before anything is loaded, so a taken port fails fast as bad
    /// input (exit code 2).
    pub fn bind(addr: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(addr)
            .and_then(|listener| {
                listener.set_nonblocking(true)?;
                Ok(listener)
            })
            .map_err(|err| UserError::input(format!("cannot listen on {addr}: {err}")))?;
        let addr = listener.local_addr().unwrap_or(addr);
        Ok(Self {
            listener,
            addr,
            metrics: Arc::new(Mutex::new(Metrics::new())),
        })
    }

    /// Adds the exporter's sink to `sinks` and returns the summary interval to run with:
    /// `--interval` if given, else [`DEFAULT_FOLD_INTERVAL`]; in that case the other sinks
    /// do not see the interval summaries (nobody asked for them), only the metrics do.
    pub fn attach(&self, sinks: &mut Vec<Box<dyn Sink>>, interval: Option<Duration>) -> Duration {
        if interval.is_none() {
            sink::hide_intervals(sinks, true);
        }
        sinks.push(Box::new(PrometheusSink::new(self.metrics.clone())));
        interval.unwrap_or(DEFAULT_FOLD_INTERVAL)
    }

    /// Records how each hook attached (`memstall_hook_up`).
    pub fn hooks(&self, hooks: &[HookStatus]) {
        prometheus::locked(&self.metrics).hooks(hooks);
    }

    /// Accepts and answers scrapes until the task is dropped.
    pub async fn serve(self) {
        let listener = match tokio::net::TcpListener::from_std(self.listener) {
            Ok(listener) => listener,
            Err(err) => {
                term::say(format_args!("cannot serve on {}: {err}", self.addr));
                return;
            }
        };
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors and the like: back off, keep tracing.
                    log::warn!("accepting a connection on {}: {err}", self.addr);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                log::debug!("metrics: {MAX_CONNECTIONS} connections open, closing a new one");
                continue;
            };
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let response = respond(&request, &metrics);
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_REQUEST_BYTES)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                    Ok(Err(err)) => log::debug!("metrics connection: {err}"),
                    Err(_) => log::debug!("metrics connection: timed out"),
                    Ok(Ok(())) => {}
                }
                drop(slot);
            });
        }
    }
}

fn respond<B>(request: &Request<B>, metrics: &SharedMetrics) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
    };
    let text = "text/plain; charset=utf-8";
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            text,
            "not found: GET /metrics\n".into(),
        );
    }
    if request.method() != Method::GET {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, text, "only GET\n".into());
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
        return response;
    }
    let body = prometheus::locked(metrics).render();
    reply(StatusCode::OK, prometheus::CONTENT_TYPE, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Scope, Summary};

    fn get(path: &str, method: Method) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
    }

    #[test]
    fn routes() {
        let metrics: SharedMetrics = Arc::new(Mutex::new(Metrics::new()));
        let response = respond(&get("/metrics", Method::GET), &metrics);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            prometheus::CONTENT_TYPE
        );
        for path in ["/nope", "/", "/metrics/x", "/metricsx"] {
            assert_eq!(
                respond(&get(path, Method::GET), &metrics).status(),
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
        assert_eq!(
            respond(&get("/metrics", Method::HEAD), &metrics).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            respond(&get("/metrics", Method::POST), &metrics).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn taken_port_is_bad_input() {
        let first = Exporter::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let err = Exporter::bind(first.addr).err().unwrap();
        let user = err.downcast_ref::<UserError>().expect("a UserError");
        assert!(
            user.to_string()
                .starts_with(&format!("cannot listen on {}: ", first.addr)),
            "{user}"
        );
    }

    #[test]
    fn other_sinks_skip_forced_intervals() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Counting(Arc<AtomicUsize>);
        impl Sink for Counting {
            fn event(&mut self, _: &crate::event::Event) -> Result<()> {
                Ok(())
            }
            fn summary(&mut self, _: &Summary) -> Result<()> {
                self.0.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            fn finish(&mut self, _: &crate::pipeline::RunSummary) -> Result<()> {
                Ok(())
            }
        }
        for (interval, seen, every) in [
            (None, 1, DEFAULT_FOLD_INTERVAL),
            (Some(1), 2, Duration::from_secs(1)),
        ] {
            let exporter = Exporter::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let count = Arc::new(AtomicUsize::new(0));
            let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(Counting(count.clone()))];
            let period = exporter.attach(&mut sinks, interval.map(Duration::from_secs));
            assert_eq!((period, sinks.len()), (every, 2));
            for scope in [Scope::Interval, Scope::Total] {
                for sink in &mut sinks {
                    sink.summary(&Summary {
                        scope,
                        ..Default::default()
                    })
                    .unwrap();
                }
            }
            assert_eq!(count.load(Ordering::Relaxed), seen);
        }
    }
}
