//! Module `visits`, mounted only with `RINGMASTER_DEMO_REDIS=1` (the demo's
//! default needs no service): `GET /visits` counts visits in Redis, the
//! backend `cache`, and answers the count. With Redis down it answers 503
//! at once, and it counts again when Redis is back, with no restart.

use ringmaster::prelude::*;

/// The backend `/visits` counts in.
pub const CACHE: RedisBackend = RedisBackend::new("cache");
/// Mounts the module.
pub const ENV_REDIS: &str = "RINGMASTER_DEMO_REDIS";

/// The visits module.
pub struct Visits;

impl Module for Visits {
    fn backends(&self) -> Vec<Backend> {
        vec![CACHE.into()]
    }

    fn routes(&self) -> Controller {
        Controller::new("/").get("/visits", visits)
    }
}

/// `GET /visits`: one more visit; the total.
async fn visits(State(ctx): State<AppContext>) -> Result<String, AppError> {
    let mut redis = ctx.redis(CACHE)?;
    let n: u64 = ringmaster::redis_outcome(
        ringmaster::redis::cmd("INCR")
            .arg("ringmaster-demo:visits")
            .query_async(&mut redis)
            .await,
    )?;
    Ok(n.to_string())
}
