// A Go HTTP server as the simplest ones are written: http.ListenAndServe,
// no signal handling, so SIGTERM ends it at once, closing every connection
// (scripts/keepalive.sh). Usage: naive ADDR
package main

import (
	"net/http"
	"os"
)

func main() {
	http.ListenAndServe(os.Args[1], http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok go\n"))
	}))
}
