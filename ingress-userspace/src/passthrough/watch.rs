//! Close watching for spliced sockets: one epoll set, interested in hang-ups only.
//!
//! Spliced bytes never reach userspace, but every skb the verdict program consumes still
//! wakes the socket's waiters. Registering with tokio (EPOLLIN) would wake a task per
//! segment; this epoll set asks only for EPOLLRDHUP (FIN), EPOLLHUP and EPOLLERR (RST), one
//! shot at a time, so an established splice costs no userspace work at all. One thread
//! blocks in epoll_wait and routes the events to the connection tasks, along with the
//! kernel's notices (a ring buffer of socket cookies) that a socket began to hold bytes.
use std::{
    collections::HashMap,
    io,
    os::fd::{AsFd, OwnedFd},
    sync::{Arc, Mutex},
};

use aya::maps::{MapData, RingBuf};
use rustix::event::epoll::{self, EventData, EventFlags};
use tokio::sync::mpsc;

/// Which socket of a spliced pair an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Backend,
}

/// A hang-up event on one socket.
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub side: Side,
    /// EPOLLRDHUP: the peer sent FIN (or the socket is fully closed).
    pub read_closed: bool,
    /// EPOLLERR or EPOLLHUP: reset, or both directions shut.
    pub hup_or_err: bool,
    /// The kernel began to hold this socket's bytes for userspace to relay.
    pub held: bool,
}

/// Connection tasks by connection, and their sockets by cookie (for the kernel's notices).
#[derive(Debug, Default)]
struct Subs {
    conns: HashMap<u64, mpsc::UnboundedSender<Event>>,
    cookies: HashMap<u64, (u64, Side)>,
}

type Subscribers = Arc<Mutex<Subs>>;

/// Token of the eventfd that stops the dispatcher thread.
const STOP: u64 = u64::MAX;
/// Token of the ring buffer of held-byte notices.
const HELD: u64 = u64::MAX - 1;

/// The shared epoll set and its dispatcher thread.
#[derive(Debug)]
pub struct Watcher {
    epoll: Arc<OwnedFd>,
    stop: OwnedFd,
    subs: Subscribers,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = rustix::io::write(&self.stop, &1u64.to_ne_bytes());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn token(conn: u64, side: Side) -> EventData {
    EventData::new_u64(conn << 1 | u64::from(side == Side::Backend))
}

const FIRST: EventFlags = EventFlags::RDHUP
    .union(EventFlags::ERR)
    .union(EventFlags::HUP)
    .union(EventFlags::ONESHOT);
const AFTER_FIN: EventFlags = EventFlags::ERR
    .union(EventFlags::HUP)
    .union(EventFlags::ONESHOT);

impl Watcher {
    /// Creates the epoll set and starts its dispatcher thread (a blocking epoll_wait; the
    /// events are few, one per FIN or RST, and one per hold).
    pub fn new(mut held: Option<RingBuf<MapData>>) -> io::Result<Self> {
        let epoll = Arc::new(epoll::create(epoll::CreateFlags::CLOEXEC)?);
        let stop = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)?;
        epoll::add(&*epoll, &stop, EventData::new_u64(STOP), EventFlags::IN)?;
        if let Some(rb) = &held {
            epoll::add(&*epoll, rb, EventData::new_u64(HELD), EventFlags::IN)?;
        }
        let subs: Subscribers = Arc::default();
        let thread = std::thread::Builder::new()
            .name("passthrough-watch".into())
            .spawn({
                let (epoll, subs) = (epoll.clone(), subs.clone());
                move || dispatch(&epoll, &subs, held.as_mut())
            })?;
        Ok(Watcher {
            epoll,
            stop,
            subs,
            thread: Some(thread),
        })
    }

    /// Starts watching both sockets of connection `conn` (with their cookies); events arrive
    /// on the receiver.
    pub fn register(
        &self,
        conn: u64,
        (client, client_cookie): (impl AsFd, u64),
        (backend, backend_cookie): (impl AsFd, u64),
    ) -> io::Result<mpsc::UnboundedReceiver<Event>> {
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut subs = self.lock();
            subs.conns.insert(conn, tx);
            subs.cookies.insert(client_cookie, (conn, Side::Client));
            subs.cookies.insert(backend_cookie, (conn, Side::Backend));
        }
        let res = epoll::add(&*self.epoll, &client, token(conn, Side::Client), FIRST)
            .and_then(|()| epoll::add(&*self.epoll, &backend, token(conn, Side::Backend), FIRST));
        if let Err(e) = res {
            self.unregister(conn, client, backend);
            return Err(e.into());
        }
        Ok(rx)
    }

    /// Re-arms a socket after its FIN was handled: only reset or full close from now on.
    pub fn rearm(&self, conn: u64, side: Side, fd: impl AsFd) -> io::Result<()> {
        Ok(epoll::modify(
            &*self.epoll,
            fd,
            token(conn, side),
            AFTER_FIN,
        )?)
    }

    /// Stops watching (idempotent; errors of already-removed fds are ignored).
    pub fn unregister(&self, conn: u64, client: impl AsFd, backend: impl AsFd) {
        let _ = epoll::delete(&*self.epoll, client);
        let _ = epoll::delete(&*self.epoll, backend);
        let mut subs = self.lock();
        subs.conns.remove(&conn);
        subs.cookies.retain(|_, (c, _)| *c != conn);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Subs> {
        lock(&self.subs)
    }
}

fn lock(subs: &Subscribers) -> std::sync::MutexGuard<'_, Subs> {
    // A poisoned map is still a consistent map: every operation is a single insert/remove.
    subs.lock().unwrap_or_else(|p| p.into_inner())
}

/// Routes every queued hold notice to its connection.
fn route_held(rb: &mut RingBuf<MapData>, subs: &Subs) {
    while let Some(item) = rb.next() {
        let Some(cookie) = item.get(..8).and_then(|b| b.try_into().ok()) else {
            continue;
        };
        let cookie = u64::from_ne_bytes(cookie);
        if let Some((conn, side)) = subs.cookies.get(&cookie) {
            if let Some(tx) = subs.conns.get(conn) {
                let _ = tx.send(Event {
                    side: *side,
                    read_closed: false,
                    hup_or_err: false,
                    held: true,
                });
            }
        }
    }
}

fn dispatch(epoll: &OwnedFd, subs: &Subscribers, mut held: Option<&mut RingBuf<MapData>>) {
    let mut events = Vec::with_capacity(256);
    loop {
        events.clear();
        match epoll::wait(epoll, rustix::buffer::spare_capacity(&mut events), None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "epoll_wait failed; spliced passthrough connections are no longer watched");
                return;
            }
        }
        let subs = lock(subs);
        for ev in &events {
            let (flags, data) = (ev.flags, ev.data);
            let data = data.u64();
            if data == STOP {
                return;
            }
            if data == HELD {
                if let Some(rb) = held.as_deref_mut() {
                    route_held(rb, &subs);
                }
                continue;
            }
            let side = if data & 1 == 1 {
                Side::Backend
            } else {
                Side::Client
            };
            if let Some(tx) = subs.conns.get(&(data >> 1)) {
                let _ = tx.send(Event {
                    side,
                    read_closed: flags.intersects(EventFlags::RDHUP),
                    hup_or_err: flags.intersects(EventFlags::HUP | EventFlags::ERR),
                    held: false,
                });
            }
        }
    }
}
