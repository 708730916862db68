package supervise

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
)

// TestGetHTTP: the check's HTTP/1.1 GET sends the URL's path and host, and
// reads the status and the body's first line, of a plain, a chunked and a
// bodyless answer; an answer that is not HTTP is an error.
func TestGetHTTP(t *testing.T) {
	for _, tc := range []struct {
		name, answer string
		code         int
		want, err    string
	}{
		{"plain", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n", 200, `200 OK: "ok"`, ""},
		{"chunked", "HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nbad\r\n\r\n0\r\n\r\n", 500, `500 Internal Server Error: "bad"`, ""},
		{"no body", "HTTP/1.0 204 No Content\r\n\r\n", 204, "204 No Content", ""},
		{"not HTTP", "SSH-2.0-OpenSSH_9.2\r\n", 0, "", "not an HTTP answer"},
		{"nothing", "", 0, "", "no HTTP answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			got := make(chan string, 1)
			go func() {
				defer server.Close()
				r := bufio.NewReader(server)
				var head strings.Builder
				for {
					l, err := r.ReadString('\n')
					head.WriteString(l)
					if err != nil || l == "\r\n" {
						break
					}
				}
				got <- head.String()
				io.WriteString(server, tc.answer)
			}()
			code, answer, err := getHTTP(client, "http://127.0.0.1:8100/healthz?deep=1")
			if req := <-got; !strings.HasPrefix(req, "GET /healthz?deep=1 HTTP/1.1\r\nHost: 127.0.0.1:8100\r\n") {
				t.Errorf("request sent:\n%s", req)
			}
			if code != tc.code || answer != tc.want || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
				t.Errorf("getHTTP = %d, %q, %v; want %d, %q, an error saying %q", code, answer, err, tc.code, tc.want, tc.err)
			}
		})
	}
}
