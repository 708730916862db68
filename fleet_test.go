package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/testutil"
)

// TestFleet runs the fleet simulation (scripts/fleet.sh: 2 hosts in network
// namespaces, each with its own sshd, HAProxy in front, ansible-playbook
// over SSH) and checks what docs/fleets.md says of it: deploy/ansible's
// role deploys every host at once, or host by host, with no failed request;
// the naive deploy all at once fails requests (the simulation can tell); a
// second run changes nothing; a broken release fails the play while the
// old release serves on; and nothing of the simulation is left.
func TestFleet(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the fleet simulation needs root (network namespaces)")
	}
	for _, tool := range []string{"ansible-playbook", "haproxy", "/usr/sbin/sshd", "ssh", "ip"} {
		testutil.RequireTool(t, tool)
	}
	out := t.TempDir() + "/fleet.json"
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "scripts/fleet.sh", "--hosts", "2", "--json", out)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) } // its trap removes what it made
	cmd.WaitDelay = time.Minute
	output, err := cmd.CombinedOutput()
	t.Logf("scripts/fleet.sh:\n%s", output)
	if err != nil {
		t.Fatalf("scripts/fleet.sh: %v", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Tag  string
		Tmp  string
		Rows []struct {
			Scenario       string
			PlayStatus     int    `json:"play_status"`
			Requests       int    `json:"requests"`
			Failed         int    `json:"failed"`
			Refused        int    `json:"refused"`
			ServedAfter    string `json:"served_after"`
			ChangedNothing bool   `json:"changed_nothing"`
		}
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range res.Rows {
		seen[r.Scenario] = true
		if r.Requests == 0 {
			t.Errorf("%s: no request was made", r.Scenario)
		}
		switch r.Scenario {
		case "naive, all at once":
			if r.Failed == 0 {
				t.Errorf("%s: 0 failed of %d: every host restarted at once, and the simulation saw nothing lost", r.Scenario, r.Requests)
			}
		case "takeover, all at once", "takeover, rolling", "takeover, no change":
			if r.Failed > 0 || r.PlayStatus != 0 {
				t.Errorf("%s: %d of %d failed, the play exited %d; want 0 and 0", r.Scenario, r.Failed, r.Requests, r.PlayStatus)
			}
		case "takeover, broken release":
			if r.PlayStatus == 0 {
				t.Errorf("%s: the play succeeded, though no new generation served", r.Scenario)
			}
			if r.Failed > 0 {
				t.Errorf("%s: %d of %d failed while the broken release was rolled back", r.Scenario, r.Failed, r.Requests)
			}
		}
		want := "v2:30" // 30 requests through HAProxy after the deploy, every one answered by v2
		if r.ServedAfter != want {
			t.Errorf("%s: served after the deploy %q, want %q", r.Scenario, r.ServedAfter, want)
		}
		if r.Scenario == "takeover, no change" && !r.ChangedNothing {
			t.Errorf("%s: a second run with no change changed something", r.Scenario)
		}
	}
	if len(seen) != 6 {
		t.Errorf("%d scenarios, want 6: %v", len(seen), seen)
	}
	// Nothing left: no namespace, no process in the temp dir.
	if ns, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(ns), "tkf-"+res.Tag+"-") {
		t.Errorf("the simulation's namespaces are left:\n%s", ns)
	}
	if _, err := os.Stat(res.Tmp); res.Tmp == "" || !os.IsNotExist(err) {
		t.Errorf("the simulation's temp dir is left (%v)", err)
	}
}
