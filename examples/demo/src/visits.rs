//! Module `visits`, mounted only with `RINGMASTER_DEMO_REDIS=1` (the demo's
//! default needs no service): `GET /visits` counts visits in Redis, the
//! backend `cache`, and answers the count. With Redis down it answers 503
//! at once, and it counts again when Redis is back, with no restart.

use ringmaster::prelude::*;

/// The backend `/visits` counts in.
pub const BACKEND: &str = "cache";
/// Mounts the module.
pub const ENV_REDIS: &str = "RINGMASTER_DEMO_REDIS";

/// The visits module.
pub struct Visits;

impl Module for Visits {
    fn name(&self) -> &str {
        "visits"
    }

    fn backends(&self) -> Vec<&'static str> {
        vec![BACKEND]
    }

    fn controllers(&self) -> Vec<Controller> {
        vec![Controller::new("/").get("/visits", visits)]
    }
}

/// `GET /visits`: one more visit; the total.
async fn visits(State(ctx): State<AppContext>) -> Result<String, AppError> {
    let mut redis = ctx.redis(BACKEND)?;
    let n: u64 = ringmaster::redis_outcome(
        ringmaster::redis::cmd("INCR")
            .arg("ringmaster-demo:visits")
            .query_async(&mut redis)
            .await,
    )?;
    Ok(n.to_string())
}
