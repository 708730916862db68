package procfs

// The system's uptime, the clock a process's start time counts in.

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// userHZ is the unit of the times in /proc/PID/stat: USER_HZ, 100 on every
// architecture Linux runs on (sysconf(_SC_CLK_TCK)).
const userHZ = 100

// Uptime reads /proc/uptime: how long the system has run, suspended time
// included (CLOCK_BOOTTIME), as Stat.Start counts.
func (fs FS) Uptime() (time.Duration, error) {
	b, err := os.ReadFile(string(fs) + "/uptime")
	if err != nil {
		return 0, err
	}
	return parseUptime(b)
}

// parseUptime reads the first field of /proc/uptime, seconds with two
// decimals ("3600.25 7100.50").
func parseUptime(b []byte) (time.Duration, error) {
	f := bytes.Fields(b)
	if len(f) == 0 {
		return 0, fmt.Errorf("uptime: %w", errMalformed)
	}
	s, err := strconv.ParseFloat(string(f[0]), 64)
	if err != nil || !(s >= 0 && s <= 1e10) { // and not NaN: some 300 years at most
		return 0, fmt.Errorf("uptime %q: %w", f[0], errMalformed)
	}
	return time.Duration(s * float64(time.Second)).Round(10 * time.Millisecond), nil
}

// Age is how long the process of st has run, the system having run uptime.
func (st Stat) Age(uptime time.Duration) time.Duration {
	return max(uptime-time.Duration(st.Start)*time.Second/userHZ, 0)
}
