// A Java HTTP/1.0 server that drains on SIGTERM: java [-Dstartdelay=MS]
// [-Dhealthz=STATUS] DrainServer.java PORT. With startdelay it initializes
// that long before it binds, as the Rssminer server of the 2012 recipe did;
// with healthz, GET /healthz answers STATUS (a release that is unwell).
// JDK's HttpServer.stop() drops connections it accepted but had not yet
// read a request from; this one serves every connection it accepted.
import java.io.*;
import java.net.*;
import java.util.concurrent.*;

public class DrainServer {
    public static void main(String[] args) throws Exception {
        Thread.sleep(Long.getLong("startdelay", 0L)); // loading caches, warming up
        int healthz = Integer.getInteger("healthz", 200);
        ServerSocket ss = new ServerSocket();
        ss.bind(new InetSocketAddress("127.0.0.1", Integer.parseInt(args[0])), 128);
        ExecutorService pool = Executors.newFixedThreadPool(8);
        Thread acceptor = Thread.currentThread();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                ss.close();          // stop accepting
                acceptor.join();     // every accepted connection is in the pool
                pool.shutdown();
                pool.awaitTermination(30, TimeUnit.SECONDS);
            } catch (Exception e) { }
        }));
        System.out.println("listening 127.0.0.1:" + args[0]);
        byte[] body = ("pid=" + ProcessHandle.current().pid() + " java\n").getBytes();
        while (true) {
            Socket s;
            try { s = ss.accept(); } catch (IOException e) { return; }
            pool.execute(() -> {
                try (s; BufferedReader in = new BufferedReader(new InputStreamReader(s.getInputStream()))) {
                    String first = in.readLine();
                    for (String line = first; line != null && !line.isEmpty(); line = in.readLine()) { }
                    int status = first != null && first.startsWith("GET /healthz ") ? healthz : 200;
                    OutputStream out = s.getOutputStream();
                    out.write(("HTTP/1.0 " + status + " " + (status == 200 ? "OK" : "Unwell") + "\r\nContent-Length: " + body.length + "\r\n\r\n").getBytes());
                    out.write(body);
                } catch (IOException e) { }
            });
        }
    }
}
