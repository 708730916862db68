package supervise

import (
	"testing"

	"github.com/takeover/takeover/internal/testutil"
)

// The tests start helpers: the test binary again (testutil.RunHelper's
// serve, and frontHelper).
func TestMain(m *testing.M) { testutil.Main(m, frontHelper) }
