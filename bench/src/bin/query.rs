//! `Db::query` against the same statement through `on_db!` (sqlx called
//! directly), on one SQLite pool: `SELECT id, randomnumber FROM world
//! WHERE id = $1`, as the demo's `/db` runs it. Rounds alternate between
//! the two, and the medians of the per-round ratios are printed.
//!
//!   cargo run --release -p ringmaster-bench --bin query -- [ROUNDS] [QUERIES]
//!   cargo run --release -p ringmaster-bench --bin query -- [ROUNDS] [QUERIES] postgres://...

use std::time::Instant;

use ringmaster::sqlx;
use ringmaster::{Config, Db, SqlBackend, on_db};

const MAIN: SqlBackend = SqlBackend::new("main");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = args.first().map_or(Ok(9), |a| a.parse())?;
    let queries: u32 = args.get(1).map_or(Ok(20_000), |a| a.parse())?;
    let dir = ringmaster_bench::scratch_dir();
    let url = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| format!("sqlite://{}/main.db", dir.display()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let toml = format!("[groups.web]\n[backends.main]\nurl = \"{url}\"\n");
        let config = Config::from_toml_str(&toml, "query bench")?;
        let worker = ringmaster_demo::web();
        ringmaster::migrate(std::slice::from_ref(&worker), &config).await?;
        let identity = ringmaster::WorkerIdentity::standalone(
            "web",
            config.group("web").cloned().unwrap_or_default(),
        );
        let booted =
            ringmaster::boot(&worker, identity, std::sync::Arc::new(config))
                .await
                .map_err(|e| e.to_string())?;
        let db: Db = booted.ctx.db(MAIN)?.clone();
        let mut ratios = Vec::new();
        let (mut direct_all, mut query_all) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let one = |use_query: bool| {
                let db = db.clone();
                async move {
                    let started = Instant::now();
                    for i in 0..queries {
                        let id = (i % 10_000 + 1) as i32;
                        let row: (i32, i32) = if use_query {
                            db.query("SELECT id, randomnumber FROM world WHERE id = $1")
                                .bind(id)
                                .fetch_one()
                                .await?
                        } else {
                            on_db!(&db, |pool| {
                                sqlx::query_as("SELECT id, randomnumber FROM world WHERE id = $1")
                                    .bind(id)
                                    .fetch_one(pool)
                                    .await
                            })?
                        };
                        std::hint::black_box(row);
                    }
                    Ok::<f64, ringmaster::AppError>(
                        started.elapsed().as_secs_f64() * 1e6 / f64::from(queries),
                    )
                }
            };
            // Alternate which goes first.
            let (direct, query) = if round % 2 == 0 {
                let d = one(false).await?;
                (d, one(true).await?)
            } else {
                let q = one(true).await?;
                (one(false).await?, q)
            };
            ratios.push(query / direct);
            direct_all.push(direct);
            query_all.push(query);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "{rounds} rounds of {queries} queries: on_db! {:.2} us/query, Db::query {:.2} us/query (medians); Db::query / on_db! = {:.3} (median of per-round ratios)",
            median(&mut direct_all),
            median(&mut query_all),
            median(&mut ratios)
        );
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
