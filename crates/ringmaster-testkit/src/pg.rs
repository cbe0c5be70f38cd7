//! A uniquely named PostgreSQL database per test, dropped afterwards.
//!
//! The server is the machine's (127.0.0.1:5432, trust auth) unless
//! `DATABASE_URL` names another admin URL. When it is unreachable the test
//! fails and says how to start it; it never passes silently.

use sqlx::Connection;

/// The admin URL: `DATABASE_URL`, or the local server's `test` database.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A database that exists for the life of this value.
pub struct TestDatabase {
    /// Its name.
    pub name: String,
    /// A URL to connect to it.
    pub url: String,
    admin: String,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the database helper")
}

impl TestDatabase {
    /// Creates `ringmaster_test_<pid>_<n>` on the admin server.
    pub fn create() -> TestDatabase {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("ringmaster_test_{}_{n}", std::process::id());
        let admin = admin_url();
        runtime().block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is not reachable at {admin}: {e}. Start it with \
                     `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
                     or set DATABASE_URL to an admin URL"
                    )
                });
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        });
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        TestDatabase {
            url: format!("{base}/{name}"),
            name,
            admin,
        }
    }
}

impl TestDatabase {
    /// How many sessions on this database are encrypted (`pg_stat_ssl`).
    pub fn ssl_sessions(&self) -> i64 {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        runtime().block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {admin}: {e}"));
            let (n,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.datname = $1 AND s.ssl",
            )
            .bind(&name)
            .fetch_one(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot read pg_stat_ssl: {e}"));
            n
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        runtime().block_on(async {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await;
            }
        });
    }
}
