// A Java HTTP/1.0 server that drains on SIGTERM: java [-Dstartdelay=MS]
// DrainServer.java PORT. With startdelay it initializes that long before it
// binds, as the Rssminer server of the 2012 recipe did.
// JDK's HttpServer.stop() drops connections it accepted but had not yet
// read a request from; this one serves every connection it accepted.
import java.io.*;
import java.net.*;
import java.util.concurrent.*;

public class DrainServer {
    public static void main(String[] args) throws Exception {
        Thread.sleep(Long.getLong("startdelay", 0L)); // loading caches, warming up
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
                    for (String line = in.readLine(); line != null && !line.isEmpty(); line = in.readLine()) { }
                    OutputStream out = s.getOutputStream();
                    out.write(("HTTP/1.0 200 OK\r\nContent-Length: " + body.length + "\r\n\r\n").getBytes());
                    out.write(body);
                } catch (IOException e) { }
            });
        }
    }
}
