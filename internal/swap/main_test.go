package swap

import (
	"os"
	"testing"

	"github.com/takeover/takeover/internal/testutil"
)

// The tests' servers are the test binary again, in a helper mode: BenchmarkAccept's
// acceptors, and testutil.RunHelper's serve (TestCheckOldAfterOpen).
func TestMain(m *testing.M) {
	testutil.Main(m, func(mode string, _ []string) (int, bool) {
		switch mode {
		case "acceptor": // accept on fd 3 from a level-triggered epoll loop, answer "ok", close
			return acceptLoop(3), true
		case "trapped-acceptor": // send a seccomp listener that traps accept(2) to fd 4, then exec an acceptor
			return trappedAcceptor(), true
		case "keepalive": // serve keep-alive HTTP, as Go's net/http or half-closing at an end of file (TestTakeConns)
			return keepAliveServer(os.Args[1]), true
		case "migrate": // hold and release tcp_migrate_req as stdin says (TestMigrateReqKilled)
			return migrateHelper(os.Args[1]), true
		}
		return 0, false
	})
}
