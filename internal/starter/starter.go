// Package starter holds Server::Starter's formats, as start_server (0.35)
// reads and writes them: its command line and the environment variables
// that stand for its options, the --port syntax, the SERVER_STARTER_PORT a
// worker gets its sockets by, the --status-file's generation:pid lines,
// the envdir and the pid file. Running a server is takeover's, not here.
package starter

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// A Socket is one entry of SERVER_STARTER_PORT: a socket passed at FD.
type Socket struct {
	Addr string // "127.0.0.1:8100", "8100" or a unix socket path
	FD   int
}

// ParseEnv reads SERVER_STARTER_PORT: "127.0.0.1:8100=3;/run/app.sock=4".
func ParseEnv(s string) ([]Socket, error) {
	var ps []Socket
	for _, part := range strings.Split(s, ";") {
		if part == "" {
			continue
		}
		i := strings.LastIndexByte(part, '=')
		if i <= 0 {
			return nil, fmt.Errorf("SERVER_STARTER_PORT entry %q: want ADDR=FD", part)
		}
		fd, err := strconv.Atoi(part[i+1:])
		if err != nil || fd < 0 || fd > MaxFD {
			return nil, fmt.Errorf("SERVER_STARTER_PORT entry %q: fd %q is not a number", part, part[i+1:])
		}
		ps = append(ps, Socket{Addr: part[:i], FD: fd})
	}
	if len(ps) == 0 {
		return nil, errors.New("SERVER_STARTER_PORT names no socket")
	}
	return ps, nil
}

// FormatEnv formats SERVER_STARTER_PORT as start_server does, for sockets
// by those names at those fds: "PORT=FD" or "HOST:PORT=FD", ';'-separated.
func FormatEnv(names []string, fds []int) string {
	parts := make([]string, len(names))
	for i, name := range names {
		parts[i] = name + "=" + strconv.Itoa(fds[i])
	}
	return strings.Join(parts, ";")
}
