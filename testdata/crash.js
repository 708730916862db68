// graceful's case: a node app that throws an uncaught exception from an
// async callback on one URL, and dies of it. node crash.js PORT.
const http = require('http');
const port = Number(process.argv[2]);
http.createServer((req, res) => {
  if (req.url === '/crash') {
    setTimeout(() => { throw new Error('boom from an async callback'); }, 0);
    return;
  }
  res.end(`pid=${process.pid} node\n`);
}).listen(port, '127.0.0.1', () => console.log(`listening 127.0.0.1:${port}`));
