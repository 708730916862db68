// A node HTTP server with no SIGTERM handler: the signal ends it at once,
// closing every connection (scripts/keepalive.sh). node naive_server.js PORT
require('http').createServer((req, res) => res.end('ok node\n'))
  .listen(Number(process.argv[2]), '127.0.0.1');
