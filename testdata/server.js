// A node HTTP server as users write one: node server.js PORT [HOST].
// SIGTERM closes the listener and lets requests in flight finish.
const http = require('http');
const port = Number(process.argv[2]);
const host = process.argv[3] || '127.0.0.1';
const server = http.createServer((req, res) => {
  const ms = Number(new URL(req.url, 'http://x').searchParams.get('ms') || 0);
  setTimeout(() => res.end(`pid=${process.pid} node\n`), ms);
});
server.keepAliveTimeout = 100;
server.listen(port, host, () => console.log(`listening ${host}:${port}`));
process.on('SIGTERM', () => {
  // Since node 19, close() also closes "idle" connections, among them ones
  // just accepted whose request is not parsed yet: a drain must serve those.
  server.closeIdleConnections = () => {};
  server.close(() => process.exit(0));
});
