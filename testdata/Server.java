// A JDK HttpServer as users write one: java Server.java PORT [HOST].
// SIGTERM runs the shutdown hook: stop accepting, finish exchanges in flight
// (JDK 17 waits the whole delay even when idle, so keep it short).
import com.sun.net.httpserver.HttpServer;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.util.concurrent.Executors;

public class Server {
    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[0]);
        String host = args.length > 1 ? args[1] : "127.0.0.1";
        HttpServer server = HttpServer.create(new InetSocketAddress(host, port), 128);
        server.setExecutor(Executors.newFixedThreadPool(8));
        server.createContext("/", exchange -> {
            String q = exchange.getRequestURI().getQuery();
            if (q != null && q.startsWith("ms=")) {
                try { Thread.sleep(Long.parseLong(q.substring(3))); } catch (InterruptedException e) { }
            }
            byte[] body = ("pid=" + ProcessHandle.current().pid() + " java\n").getBytes();
            exchange.sendResponseHeaders(200, body.length);
            try (OutputStream os = exchange.getResponseBody()) { os.write(body); }
        });
        server.start();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> server.stop(1)));
        System.out.println("listening " + host + ":" + port);
    }
}
