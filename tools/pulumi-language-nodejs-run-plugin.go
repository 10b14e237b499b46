// RunPlugin for policy packs, added by tools/install-pulumi.sh to the Node.js language host it
// builds from github.com/pulumi/pulumi/sdk/v3@v3.68.0 (the newest release of that host the Go
// module proxy serves here). Since the CLI stopped launching the `pulumi-analyzer-policy` shim, a
// CLI of 3.276 starts every Node.js policy pack (`pulumi preview --policy-pack DIR`) through the
// language host's RunPlugin, which v3.68.0 answers with "not supported"; this file replaces that
// stub (renamed away by the build script) with what later hosts do for kind "analyzer": run
// @pulumi/pulumi/cmd/run-policy-pack, resolved from the policy pack's folder, with the engine
// address and the pack's folder as arguments and that folder as the working directory. The
// policy pack then prints its port on stdout, which the CLI reads through the RunPlugin stream.
//
// Later hosts also forward the stack's name and configuration to the pack (PULUMI_NODEJS_STACK,
// PULUMI_CONFIG); this one does not, and the kit's policy pack reads neither.
//
// It is compiled only by the build script (package main of that host), never by this repo.
package main

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// v3.68.0's RunPluginRequest predates two fields the 3.276 CLI fills (pulumi/language.proto):
// info = 5 (a ProgramInfo, whose program_directory is its field 2) and kind = 6. They arrive as
// unknown fields, which the protobuf runtime keeps; this reads them from there.
const (
	runPluginInfoField          protowire.Number = 5
	runPluginKindField          protowire.Number = 6
	programInfoProgramDirectory protowire.Number = 2
)

// eachBytesField calls visit for every length-delimited field of raw (a serialized message).
func eachBytesField(raw []byte, visit func(protowire.Number, []byte)) error {
	for len(raw) > 0 {
		num, typ, n := protowire.ConsumeTag(raw)
		if n < 0 {
			return protowire.ParseError(n)
		}
		raw = raw[n:]
		if typ == protowire.BytesType {
			value, m := protowire.ConsumeBytes(raw)
			if m < 0 {
				return protowire.ParseError(m)
			}
			visit(num, value)
			raw = raw[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, raw)
		if m < 0 {
			return protowire.ParseError(m)
		}
		raw = raw[m:]
	}
	return nil
}

// runPluginTarget returns the request's program directory and plugin kind.
func runPluginTarget(req *pulumirpc.RunPluginRequest) (string, string, error) {
	var programDir, kind string
	var inner error
	err := eachBytesField(req.ProtoReflect().GetUnknown(), func(num protowire.Number, value []byte) {
		switch num {
		case runPluginKindField:
			kind = string(value)
		case runPluginInfoField:
			inner = eachBytesField(value, func(field protowire.Number, text []byte) {
				if field == programInfoProgramDirectory {
					programDir = string(text)
				}
			})
		}
	})
	if err == nil {
		err = inner
	}
	if err != nil {
		return "", "", fmt.Errorf("reading the RunPlugin request: %w", err)
	}
	// A CLI that still sends the deprecated `program` field (2) instead of info.
	if programDir == "" {
		programDir = req.GetProgram()
	}
	return programDir, kind, nil
}

// resolveFrom resolves a module the way Node.js does from dir (walking up its node_modules).
func resolveFrom(dir, nodeBin, module string) (string, error) {
	cmd := exec.Command(nodeBin, "-e", fmt.Sprintf("console.log(require.resolve(%q))", module))
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s cannot be resolved from %s (is @pulumi/pulumi installed there or above?): %w", module, dir, err)
	}
	return strings.TrimSpace(string(out)), nil
}

func (host *nodeLanguageHost) RunPlugin(
	req *pulumirpc.RunPluginRequest, server pulumirpc.LanguageRuntime_RunPluginServer,
) error {
	programDir, kind, err := runPluginTarget(req)
	if err != nil {
		return err
	}
	if kind != "analyzer" || programDir == "" {
		return fmt.Errorf("this language host (sdk/v3@v3.68.0, patched by kimi-kit) runs only policy packs "+
			"through RunPlugin; asked for kind %q in %q", kind, programDir)
	}
	closer, stdout, stderr, err := rpcutil.MakeRunPluginStreams(server, false)
	if err != nil {
		return err
	}
	defer closer.Close()

	nodeBin, err := exec.LookPath("node")
	if err != nil {
		return fmt.Errorf("could not find node on the $PATH: %w", err)
	}
	runPath, err := resolveFrom(programDir, nodeBin, "@pulumi/pulumi/cmd/run-policy-pack")
	if err != nil {
		return err
	}
	// run-policy-pack's arguments: <engine address> <policy pack folder>; the CLI sends the former.
	args := append([]string{runPath}, req.GetArgs()...)
	args = append(args, programDir)
	cmd := exec.Command(nodeBin, args...)
	cmd.Dir = programDir
	cmd.Env = req.GetEnv()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if status, ok := exitErr.Sys().(syscall.WaitStatus); ok {
				return fmt.Errorf("policy pack exited with non-zero exit code: %d", status.ExitStatus())
			}
			return fmt.Errorf("policy pack exited unexpectedly: %w", exitErr)
		}
		return fmt.Errorf("could not run the policy pack with %s: %w", nodeBin, err)
	}
	return closer.Close()
}
