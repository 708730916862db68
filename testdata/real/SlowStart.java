// A JVM app that, like the Rssminer server of the 2012 recipe, initializes
// for a while before it binds, then serves HTTP/1.0 and drains on SIGTERM:
// java -Dstartdelay=MS SlowStart.java PORT.
import java.io.*;
import java.net.*;
import java.util.concurrent.*;

public class SlowStart {
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
        byte[] body = ("pid=" + ProcessHandle.current().pid() + " slowstart\n").getBytes();
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
