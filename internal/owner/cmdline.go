package owner

import "github.com/takeover/takeover/internal/procfs"

func CommandLine(pid int) string {
	cmd, err := procfs.FS("/proc").Cmdline(pid)
	if err != nil {
		return "?"
	}
	return cmd
}
