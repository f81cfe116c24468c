// cnitool: libcni's own command-line client, rewritten for Tether's tests because Debian's
// golang-github-appc-cni-dev ships libcni without it. Same interface as upstream's cnitool:
//
//	cnitool add|check|del NETWORK NETNS
//
// reading NETCONFPATH (conflist dir), CNI_PATH (plugin dirs), CAP_ARGS (capability args as
// JSON), CNI_ARGS ("K=V;K=V") and CNI_IFNAME (default eth0); the container id is derived from
// the netns path as upstream does. One addition: CNI_CACHE_DIR overrides libcni's result cache
// dir (default /var/lib/cni), so tests keep the cache in their temp dir.
//
// Built offline in GOPATH mode against Debian's libcni (see tests/tests/cnitool.rs).
package main

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

func parseArgs(args string) ([][2]string, error) {
	var result [][2]string
	for _, pair := range strings.Split(args, ";") {
		kv := strings.Split(pair, "=")
		if len(kv) != 2 || kv[0] == "" || kv[1] == "" {
			return nil, fmt.Errorf("invalid CNI_ARGS pair %q", pair)
		}
		result = append(result, [2]string{kv[0], kv[1]})
	}
	return result, nil
}

func exit(err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintf(os.Stderr, "usage: %s add|check|del NETWORK NETNS\n", filepath.Base(os.Args[0]))
		os.Exit(1)
	}
	netdir := os.Getenv("NETCONFPATH")
	if netdir == "" {
		netdir = "/etc/cni/net.d"
	}
	netconf, err := libcni.LoadConfList(netdir, os.Args[2])
	if err != nil {
		exit(err)
	}

	var capabilityArgs map[string]interface{}
	if v := os.Getenv("CAP_ARGS"); v != "" {
		if err := json.Unmarshal([]byte(v), &capabilityArgs); err != nil {
			exit(fmt.Errorf("CAP_ARGS: %w", err))
		}
	}
	var cniArgs [][2]string
	if v := os.Getenv("CNI_ARGS"); v != "" {
		if cniArgs, err = parseArgs(v); err != nil {
			exit(err)
		}
	}
	ifName, ok := os.LookupEnv("CNI_IFNAME")
	if !ok {
		ifName = "eth0"
	}
	netns, err := filepath.Abs(os.Args[3])
	if err != nil {
		exit(err)
	}
	// Upstream's choice: the container id is a hash of the netns path.
	s := sha512.Sum512([]byte(netns))
	containerID := fmt.Sprintf("cnitool-%x", s[:10])

	paths := filepath.SplitList(os.Getenv("CNI_PATH"))
	var cninet *libcni.CNIConfig
	if dir := os.Getenv("CNI_CACHE_DIR"); dir != "" {
		cninet = libcni.NewCNIConfigWithCacheDir(paths, dir, nil)
	} else {
		cninet = libcni.NewCNIConfig(paths, nil)
	}
	rt := &libcni.RuntimeConf{
		ContainerID:    containerID,
		NetNS:          netns,
		IfName:         ifName,
		Args:           cniArgs,
		CapabilityArgs: capabilityArgs,
	}

	ctx := context.TODO()
	switch os.Args[1] {
	case "add":
		result, err := cninet.AddNetworkList(ctx, netconf, rt)
		if result != nil {
			_ = result.Print()
		}
		exit(err)
	case "check":
		exit(cninet.CheckNetworkList(ctx, netconf, rt))
	case "del":
		exit(cninet.DelNetworkList(ctx, netconf, rt))
	default:
		exit(fmt.Errorf("unknown command %q (add, check or del)", os.Args[1]))
	}
}
