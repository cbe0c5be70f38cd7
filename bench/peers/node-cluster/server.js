// The peer for bench/run.sh: Node's `cluster` module with Express workers,
// written as Node users write it (see ../../../../shared/PEERS.md):
// - the primary forks WORKERS workers and forks a new one when one dies;
// - SIGHUP restarts the workers one by one, the new one listening before
//   the old one is disconnected (a rolling restart, as PM2's `reload`);
// - /counter asks the primary for the cluster-wide count (one IPC round
//   trip per request: the primary owns the counter);
// - /db reads one row of the same `world` table (better-sqlite3).
//
// Environment: PORT (3200), WORKERS (2), DB (a SQLite file the demo's
// `migrate` created).
'use strict';
const cluster = require('node:cluster');
const { once } = require('node:events');

const PORT = Number(process.env.PORT || 3200);
const WORKERS = Number(process.env.WORKERS || 2);

if (cluster.isPrimary) {
  let hits = 0;
  let reloading = false;
  const fork = () => {
    const w = cluster.fork();
    w.on('message', (m) => {
      if (m && m.t === 'inc') {
        hits += 1;
        w.send({ t: 'hits', id: m.id, v: hits });
      }
    });
    return w;
  };
  for (let i = 0; i < WORKERS; i++) fork();
  cluster.on('exit', (w) => {
    if (!w.exitedAfterDisconnect) fork();
  });
  process.on('SIGHUP', async () => {
    if (reloading) return;
    reloading = true;
    for (const old of Object.values(cluster.workers)) {
      const next = fork();
      await once(next, 'listening');
      old.disconnect();
      await once(old, 'exit');
    }
    reloading = false;
  });
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers)) w.disconnect();
    setTimeout(() => process.exit(0), 5000).unref();
    cluster.on('exit', () => {
      if (Object.keys(cluster.workers).length === 0) process.exit(0);
    });
  });
} else {
  const express = require('express');
  const Database = require('better-sqlite3');
  const db = process.env.DB ? new Database(process.env.DB) : null;
  const row = db && db.prepare('SELECT id, randomnumber FROM world WHERE id = ?');
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  let seq = 0;
  const waiting = new Map();
  process.on('message', (m) => {
    if (m && m.t === 'hits') {
      const res = waiting.get(m.id);
      waiting.delete(m.id);
      if (res) res.type('text/plain').send(String(m.v));
    }
  });
  app.get('/plaintext', (req, res) => res.type('text/plain').send('Hello, World!'));
  app.get('/json', (req, res) => res.json({ message: 'Hello, World!' }));
  app.get('/counter', (req, res) => {
    seq += 1;
    waiting.set(seq, res);
    process.send({ t: 'inc', id: seq });
  });
  app.get('/db', (req, res) => {
    if (!row) return res.status(503).send('no DB');
    const r = row.get(1 + Math.floor(Math.random() * 10000));
    res.json({ id: r.id, randomNumber: r.randomnumber });
  });
  app.get('/healthz', (req, res) => res.json({ pid: process.pid }));
  app.listen(PORT, '127.0.0.1');
}
