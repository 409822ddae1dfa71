/*
 * Config for Etsy's statsd daemon (`make run` starts it; node_modules/statsd/bin/statsd <this file>).
 * No backend is configured: `make stats` reads the figures of the current flush window
 * from the admin port. Ports come from the same env vars the Python side uses.
 */
{
  address: process.env.STATSD_BIND || "127.0.0.1",
  port: parseInt(process.env.STATSD_PORT || "8125", 10),
  mgmt_address: process.env.STATSD_BIND || "127.0.0.1",
  mgmt_port: parseInt(process.env.STATSD_ADMIN_PORT || "8126", 10),
  // The window that `make stats` reports on: counters and timers start afresh at each flush.
  flushInterval: parseInt(process.env.STATSD_FLUSH_INTERVAL_MS || "60000", 10),
  backends: [],
  deleteIdleStats: false
}
