package procfs

// A user's name, from the passwd file.

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// Passwd is the system's user database.
const Passwd = "/etc/passwd"

// UserName returns the name of user uid in the passwd file at path (as
// os/user's Go lookup reads it: the first line whose third field is uid),
// and false when none names it. Not os/user: with cgo it asks the C
// library, and links runtime/cgo into every start of takeover; a user
// known only to NSS (LDAP, sssd) is named by number then.
func UserName(path string, uid int) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	want := strconv.Itoa(uid)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.ContainsRune("#+-", rune(line[0])) {
			continue // a comment, or NIS's +/- lines
		}
		f := strings.SplitN(line, ":", 4)
		if len(f) >= 3 && f[2] == want && f[0] != "" {
			return f[0], true
		}
	}
	return "", false
}
