//! Pacing virtual time to the wall clock: one virtual second per wall
//! second from the moment the session starts. The model itself never reads
//! the wall clock; the driver asks the [`Pacer`] how far to advance it and
//! how long to sleep when it has nothing to do before then.

use std::time::Duration as Wall;

use snet_fabric::time::{Duration, Instant};

/// A source of wall-clock time: the real one ([`WallClock`]), or a fake one
/// in tests.
pub trait Clock {
    /// Wall time since a fixed moment.
    fn now(&self) -> Wall;
}

/// The real wall clock (monotonic).
#[derive(Debug, Clone, Copy)]
pub struct WallClock(std::time::Instant);

impl WallClock {
    /// A clock counting from now.
    pub fn start() -> Self {
        WallClock(std::time::Instant::now())
    }
}

impl Clock for WallClock {
    fn now(&self) -> Wall {
        self.0.elapsed()
    }
}

/// Maps wall time to virtual time: virtual `v0` at wall `w0`, and one
/// virtual picosecond per wall picosecond from then on. Remembers how far
/// the model fell behind.
#[derive(Debug, Clone)]
pub struct Pacer {
    w0: Wall,
    v0: Instant,
    max_lag: Wall,
    warned: bool,
}

/// `d` as a virtual duration (saturating).
fn virtual_of(d: Wall) -> Duration {
    Duration::from_ps(u64::try_from(d.as_nanos().saturating_mul(1000)).unwrap_or(u64::MAX))
}

/// `d` as a wall duration.
fn wall_of(d: Duration) -> Wall {
    Wall::from_nanos(d.as_ns())
}

impl Pacer {
    /// Virtual time `v0` corresponds to wall time `w0`.
    pub fn new(w0: Wall, v0: Instant) -> Self {
        Pacer {
            w0,
            v0,
            max_lag: Wall::ZERO,
            warned: false,
        }
    }

    /// The virtual time the model should have reached at wall time `wall`.
    pub fn target(&self, wall: Wall) -> Instant {
        self.v0 + virtual_of(wall.saturating_sub(self.w0))
    }

    /// How long to wait at wall time `wall` for the engine's next event at
    /// `next` (none: nothing queued), at most `cap`: zero if it is due.
    pub fn wait(&self, wall: Wall, next: Option<Instant>, cap: Wall) -> Wall {
        let target = self.target(wall);
        match next {
            Some(t) if t <= target => Wall::ZERO,
            Some(t) => wall_of(t.saturating_since(target)).min(cap),
            None => cap,
        }
    }

    /// How far the model is behind the wall clock at `wall`: how late its
    /// earliest pending event, at `next`, is (zero when it is not due yet).
    /// Remembered for [`Pacer::max_lag`].
    pub fn lag(&mut self, wall: Wall, next: Option<Instant>) -> Wall {
        let lag = next.map_or(Wall::ZERO, |t| {
            wall_of(self.target(wall).saturating_since(t))
        });
        self.max_lag = self.max_lag.max(lag);
        lag
    }

    /// [`Pacer::lag`], and `Some(lag)` the first time it exceeds
    /// `threshold` (for a warning given once).
    pub fn check_lag(
        &mut self,
        wall: Wall,
        next: Option<Instant>,
        threshold: Wall,
    ) -> Option<Wall> {
        let lag = self.lag(wall, next);
        if lag > threshold && !self.warned {
            self.warned = true;
            return Some(lag);
        }
        None
    }

    /// The largest lag seen.
    pub fn max_lag(&self) -> Wall {
        self.max_lag
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A clock the test moves by hand.
    struct FakeClock(Cell<Wall>);

    impl Clock for FakeClock {
        fn now(&self) -> Wall {
            self.0.get()
        }
    }

    impl FakeClock {
        fn advance(&self, d: Wall) {
            self.0.set(self.0.get() + d);
        }
    }

    #[test]
    fn virtual_time_tracks_the_clock_from_the_start() {
        let clock = FakeClock(Cell::new(Wall::from_secs(100)));
        let v0 = Instant::from_ns(12_345);
        let pacer = Pacer::new(clock.now(), v0);
        assert_eq!(pacer.target(clock.now()), v0);
        clock.advance(Wall::from_micros(250));
        assert_eq!(pacer.target(clock.now()), v0 + Duration::from_us(250));
        clock.advance(Wall::from_secs(3));
        assert_eq!(pacer.target(clock.now()), v0 + Duration::from_us(3_000_250));
        // A clock reading before the start maps to the start.
        assert_eq!(pacer.target(Wall::from_secs(1)), v0);
    }

    #[test]
    fn an_idle_driver_sleeps_until_the_next_event_or_the_cap() {
        let clock = FakeClock(Cell::new(Wall::ZERO));
        let pacer = Pacer::new(clock.now(), Instant::ZERO);
        let cap = Wall::from_millis(50);
        clock.advance(Wall::from_millis(1));
        // The next event 300 µs of virtual time ahead: sleep 300 µs.
        let next = Some(Instant::from_ns(1_300_000));
        assert_eq!(pacer.wait(clock.now(), next, cap), Wall::from_micros(300));
        // Due or overdue: no sleep.
        assert_eq!(
            pacer.wait(clock.now(), Some(Instant::from_ns(999_000)), cap),
            Wall::ZERO
        );
        // Far away or nothing queued: the cap.
        assert_eq!(
            pacer.wait(clock.now(), Some(Instant::from_ns(10_000_000_000)), cap),
            cap
        );
        assert_eq!(pacer.wait(clock.now(), None, cap), cap);
    }

    #[test]
    fn a_model_behind_the_clock_is_warned_about_once() {
        let clock = FakeClock(Cell::new(Wall::ZERO));
        let mut pacer = Pacer::new(clock.now(), Instant::ZERO);
        let threshold = Wall::from_millis(100);
        // Keeping up: the next event is still ahead, or nothing is queued.
        clock.advance(Wall::from_millis(10));
        let ahead = pacer.target(clock.now()) + Duration::from_us(5);
        assert_eq!(pacer.check_lag(clock.now(), Some(ahead), threshold), None);
        assert_eq!(pacer.check_lag(clock.now(), None, threshold), None);
        // Half speed: the event of virtual time 1 s is still to run when
        // the clock says 2 s.
        clock.advance(Wall::from_millis(1990));
        let lag = pacer.check_lag(
            clock.now(),
            Some(Instant::from_ns(1_000_000_000)),
            threshold,
        );
        assert_eq!(lag, Some(Wall::from_secs(1)));
        // Further behind: no second warning, but the largest lag is kept.
        clock.advance(Wall::from_secs(1));
        assert_eq!(
            pacer.check_lag(
                clock.now(),
                Some(Instant::from_ns(1_500_000_000)),
                threshold
            ),
            None
        );
        assert_eq!(pacer.max_lag(), Wall::from_millis(1500));
        // Caught up again.
        let next = pacer.target(clock.now()) + Duration::from_us(1);
        assert_eq!(pacer.lag(clock.now(), Some(next)), Wall::ZERO);
        assert_eq!(pacer.max_lag(), Wall::from_millis(1500));
    }
}
