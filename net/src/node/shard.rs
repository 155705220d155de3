//! One shard at run time: answers the other shards' calls, runs the refresh timer and the
//! keep-alive sweep, accepts connections for the HTTP front end, and on shutdown drains
//! its connections before the store is flushed.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use glommio::channels::channel_mesh::Receivers;
use glommio::net::TcpListener;
use glommio::timer::sleep;
use glommio::{Latency, Shares, spawn_local, spawn_local_into};

use super::Progress;
use super::admission::{self, Slot};
use crate::clock::now_ms;
use crate::http::{self, ConnLimits};
use crate::service::mesh::Msg;
use crate::service::{Services, refresh};

/// Longest sleep of the refresh timer, so shutdown and new widgets are noticed.
const MAX_TICK_SLEEP: Duration = Duration::from_millis(100);
/// How soon the executor turns to calls between shards when other tasks are busy.
const CALLS_LATENCY: Duration = Duration::from_millis(2);

/// How often streams learn which widgets of other nodes went stale (cluster mode).
const STALE_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Runs the shard until the node stops; never returns (the process ends from the main
/// thread once every shard reports done).
pub(super) async fn run(
    svc: Rc<Services>,
    listener: TcpListener,
    mut receivers: Receivers<Msg>,
    shutdown: Arc<AtomicBool>,
    progress: &Progress,
) {
    // Calls between shards run in a task queue of their own that the executor serves
    // within a few milliseconds however many connections are busy in the default one:
    // a request that needs another shard (health, an edit, a snapshot) waits for that
    // shard's turn, not for every connection there to write its slice.
    let calls = glommio::executor().create_task_queue(
        Shares::default(),
        Latency::Matters(CALLS_LATENCY),
        "shard-calls",
    );
    for (_, rx) in receivers.streams() {
        let svc = Rc::clone(&svc);
        let serve = async move {
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Call { from, id, call } => {
                        let svc = Rc::clone(&svc);
                        let run = async move {
                            let reply = call.run(&svc).await;
                            svc.mesh.answer(from, id, reply).await;
                        };
                        match spawn_local_into(run, calls) {
                            Ok(task) => drop(task.detach()),
                            Err(e) => tracing::error!("cannot run a call between shards: {e}"),
                        }
                    }
                    Msg::Reply { id, reply } => svc.mesh.deliver(id, reply),
                }
            }
        };
        match spawn_local_into(serve, calls) {
            Ok(task) => drop(task.detach()),
            Err(e) => tracing::error!("cannot serve calls between shards: {e}"),
        }
    }
    spawn_local(refresh_loop(Rc::clone(&svc))).detach();
    spawn_local(sweep_loop(Rc::clone(&svc))).detach();
    if svc.cluster.is_some() {
        spawn_local(stale_loop(Rc::clone(&svc))).detach();
    }
    if svc.kafka.is_some() {
        spawn_local(crate::kafka::run(Rc::clone(&svc))).detach();
    } else if svc.mirror.is_some() {
        spawn_local(crate::service::mirror::run_standalone(Rc::clone(&svc))).detach();
    }
    if svc.id == 0 && (svc.config.metrics || svc.config.self_dashboard) {
        spawn_local(crate::watch::run(Rc::clone(&svc))).detach();
    }
    if svc.id == 0 && svc.config.demo {
        spawn_local(crate::demo::run(Rc::clone(&svc))).detach();
    }
    {
        let svc = Rc::clone(&svc);
        spawn_local(async move {
            while !shutdown.load(Ordering::Relaxed) {
                sleep(Duration::from_millis(100)).await;
            }
            svc.stop.trigger();
            svc.hub.close_all(1001, "node shutting down");
        })
        .detach();
    }
    accept_loop(&svc, &listener).await;
    drop(listener);
    // Drain: let open requests finish, up to the drain timeout.
    let deadline = Instant::now() + Duration::from_millis(svc.config.drain_timeout_ms);
    while svc.connections.get() > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(10)).await;
    }
    // Keep answering the other shards until every shard has drained.
    progress.drained.fetch_add(1, Ordering::AcqRel);
    while progress.drained.load(Ordering::Acquire) < svc.shards {
        sleep(Duration::from_millis(10)).await;
    }
    if let Some(host) = &svc.catalogue
        && let Err(e) = host.store.flush()
    {
        tracing::error!("flushing the dashboard store: {e}");
        progress.failed.store(true, Ordering::Release);
    }
    progress.done.fetch_add(1, Ordering::AcqRel);
    // The process ends from the main thread; this executor stays as it is until then.
    std::future::pending::<()>().await;
}

/// What a connection is served by: API requests go to the HTTP front end, upgrades to
/// the WebSocket front end.
#[derive(Debug)]
struct Front {
    svc: Rc<Services>,
}

impl http::Service for Front {
    type Upgrade = uuid::Uuid;

    fn admit(&self, request: &http::Request) -> Result<(), http::Response> {
        crate::api::admit(&self.svc, request)
    }

    async fn call(&self, request: http::Request) -> http::Response {
        if !self.svc.config.request_log {
            return crate::api::route(&self.svc, request).await;
        }
        let (method, path) = (request.method.clone(), request.path.clone());
        let started = Instant::now();
        let response = crate::api::route(&self.svc, request).await;
        tracing::info!(
            target: "livedash::request",
            shard = self.svc.id,
            status = response.status,
            bytes = response.body.len(),
            us = started.elapsed().as_micros() as u64,
            "{method} {path}"
        );
        response
    }

    fn accept_upgrade(&self, request: &http::Request) -> Result<uuid::Uuid, http::Response> {
        let peers = self
            .svc
            .cluster
            .as_ref()
            .map(crate::service::cluster::ClusterLink::known_urls)
            .unwrap_or_default();
        let accepted = crate::stream::accept(&self.svc.config, &peers, request);
        if self.svc.config.request_log {
            let status = accepted.as_ref().map_or_else(|r| r.status, |_| 101);
            tracing::info!(
                target: "livedash::request",
                shard = self.svc.id,
                status,
                "{} {} (websocket)",
                request.method,
                request.path
            );
        }
        accepted
    }

    async fn websocket(&self, dashboard: uuid::Uuid, stream: glommio::net::TcpStream) {
        // A task of its own: the stream outlives the HTTP connection's task, whose state
        // (sized for the largest API request) is freed.
        // It counts as an open connection until it ends, so shutdown waits for it.
        let svc = Rc::clone(&self.svc);
        let slot = Slot::force(&svc, stream.peer_addr().ok().map(|a| a.ip()));
        spawn_local(async move {
            crate::stream::session(Rc::clone(&svc), dashboard, stream).await;
            drop(slot);
        })
        .detach();
    }
}

/// Accepts connections until the node stops; each is served by the HTTP front end.
async fn accept_loop(svc: &Rc<Services>, listener: &TcpListener) {
    let limits = ConnLimits {
        max_body: svc.config.max_body_bytes,
        header_timeout: Duration::from_millis(svc.config.header_timeout_ms),
        body_timeout: Duration::from_millis(svc.config.body_timeout_ms),
        idle_timeout: Duration::from_millis(svc.config.idle_timeout_ms),
    };
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                svc.stop.wait().await;
                None
            })
            .await;
        let stream = match accepted {
            None => return,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                // Out of file descriptors or a reset before accept: back off briefly.
                tracing::warn!(
                    shard = svc.id,
                    "accept: {e}; the shard accepts again in 5 ms: nothing to do unless it repeats: then the node may be out of open files: raise its limit (ulimit -n, or LimitNOFILE= in a systemd unit)"
                );
                sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let slot = match Slot::take(svc, stream.peer_addr().ok().map(|a| a.ip())) {
            Ok(slot) => slot,
            Err(why) => {
                spawn_local(admission::refuse(stream, why)).detach();
                continue;
            }
        };
        let svc = Rc::clone(svc);
        spawn_local(async move {
            let front = Front {
                svc: Rc::clone(&svc),
            };
            http::serve(stream, limits, &svc.stop, &front).await;
            drop(slot);
        })
        .detach();
    }
}

/// Runs due refreshes on time until the node stops.
async fn refresh_loop(svc: Rc<Services>) {
    while !svc.stop.is_set() {
        let now = now_ms();
        let next = refresh::run(&svc, now);
        let wait = next.map_or(MAX_TICK_SLEEP, |due| {
            Duration::from_millis(u64::try_from(due - now).unwrap_or(0).max(1))
        });
        sleep(wait.min(MAX_TICK_SLEEP)).await;
    }
}

/// Cluster mode: checks, a few times a second, which widgets of other nodes turned stale
/// or fresh again.
async fn stale_loop(svc: Rc<Services>) {
    while !svc.stop.is_set() {
        // Without streams there is nothing to check: look again less often.
        let idle = !svc.hub.streaming();
        sleep(if idle {
            5 * STALE_CHECK_EVERY
        } else {
            STALE_CHECK_EVERY
        })
        .await;
        crate::service::hub::Hub::check_stale(&svc).await;
    }
}

/// Wakes every stream once per ping interval to read its peer and ping it.
async fn sweep_loop(svc: Rc<Services>) {
    let every = Duration::from_millis(svc.config.ws_ping_interval_ms);
    while !svc.stop.sleep(every).await {
        svc.hub.sweep();
        svc.hub.prune_shared();
    }
}
