// A node cluster server: node cluster.js PORT. The primary forks two workers
// that share the port; SIGTERM to the primary disconnects the workers, which
// close their servers, finish the requests in flight and exit. By default
// (round-robin) the primary accepts and hands connections to the workers;
// with NODE_CLUSTER_SCHED_POLICY=none the workers accept themselves.
const cluster = require('cluster');
const http = require('http');
const port = Number(process.argv[2]);

if (cluster.isPrimary) {
  for (let i = 0; i < 2; i++) cluster.fork();
  process.on('SIGTERM', () => cluster.disconnect(() => process.exit(0)));
} else {
  const server = http.createServer((req, res) => res.end(`pid=${process.pid} node-cluster\n`));
  server.keepAliveTimeout = 100;
  // Since node 19, close() also closes "idle" connections, among them ones
  // just accepted whose request is not parsed yet: a drain must serve those.
  server.closeIdleConnections = () => {};
  server.listen(port, '127.0.0.1');
}
