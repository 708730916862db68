package procfs

// The fixture trees the tests read.

// fixtures is a /proc of a few processes: a prefork server (master 100,
// worker 101) run by a takeover launcher (90), and an sshd (200).
const fixtures FS = "testdata/proc"

// broken is a /proc whose files are cut short or garbled (400 to 404).
const broken FS = "testdata/proc-truncated"

// waiting is a /proc of processes waiting for connections in each way a
// server does (300 to 305; 305's files are broken).
const waiting FS = "testdata/proc-accept"
