// Command faultfs is a FUSE pass-through file system for `make chaos` that fails chosen reads
// and writes with EIO, as a failing disk would.
//
// Usage: faultfs [-fail-reads-from BYTES] BACKING MOUNTPOINT
//
// It mounts BACKING at MOUNTPOINT (as root, with mount(2); no fusermount) and forwards every
// operation, except on files whose path below the mount point contains "eio": their writes
// always fail with EIO, and every read that reaches offset BYTES fails with EIO (0: every
// read), so a reader gets the bytes before the bad region and then an error, as from a bad
// sector. A read is never cut short: the kernel would take a short read for the end of the
// file and shrink its cached size, turning the error into a silent truncation. It prints
// "mounted" once the mount is usable and unmounts on SIGTERM or SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// failReadsFrom is the offset from which reads of a faulty file fail.
var failReadsFrom int64

// node is a loopback node that knows its path, to decide whether its file is faulty.
type node struct {
	fs.LoopbackNode
	faulty bool
}

// faultyPath says whether a file at this path below the mount point fails.
func faultyPath(path string) bool {
	return strings.Contains(path, "eio")
}

func newNode(root *fs.LoopbackRoot, parent *fs.Inode, name string, _ *syscall.Stat_t) fs.InodeEmbedder {
	path := name
	if parent != nil {
		path = filepath.Join(parent.Path(nil), name)
	}
	return &node{LoopbackNode: fs.LoopbackNode{RootData: root}, faulty: faultyPath(path)}
}

var _ = (fs.NodeOpener)((*node)(nil))
var _ = (fs.NodeCreater)((*node)(nil))

// Open wraps the loopback's file handle when the file is faulty.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags)
	return n.wrap(fh), fuseFlags, errno
}

// Create wraps the new file's handle when the file is faulty (the child node decides).
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	inode, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return inode, fh, fuseFlags, errno
	}
	if child, ok := inode.Operations().(*node); ok {
		fh = child.wrap(fh)
	}
	return inode, fh, fuseFlags, 0
}

func (n *node) wrap(fh fs.FileHandle) fs.FileHandle {
	lf, ok := fh.(*fs.LoopbackFile)
	if !n.faulty || !ok {
		return fh
	}
	return &faultyFile{inner: lf}
}

// faultyFile forwards to a loopback file but fails writes, and reads past failReadsFrom.
// It deliberately does not offer PassthroughFd: reads must come to this process.
type faultyFile struct {
	inner *fs.LoopbackFile
}

var _ = (fs.FileReader)((*faultyFile)(nil))
var _ = (fs.FileWriter)((*faultyFile)(nil))
var _ = (fs.FileReleaser)((*faultyFile)(nil))
var _ = (fs.FileFlusher)((*faultyFile)(nil))
var _ = (fs.FileFsyncer)((*faultyFile)(nil))
var _ = (fs.FileGetattrer)((*faultyFile)(nil))
var _ = (fs.FileSetattrer)((*faultyFile)(nil))
var _ = (fs.FileLseeker)((*faultyFile)(nil))

func (f *faultyFile) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off+int64(len(buf)) > failReadsFrom {
		return nil, syscall.EIO
	}
	return f.inner.Read(ctx, buf, off)
}

func (f *faultyFile) Write(context.Context, []byte, int64) (uint32, syscall.Errno) {
	return 0, syscall.EIO
}

func (f *faultyFile) Release(ctx context.Context) syscall.Errno { return f.inner.Release(ctx) }
func (f *faultyFile) Flush(ctx context.Context) syscall.Errno   { return f.inner.Flush(ctx) }
func (f *faultyFile) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return f.inner.Fsync(ctx, flags)
}
func (f *faultyFile) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return f.inner.Getattr(ctx, out)
}
func (f *faultyFile) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.inner.Setattr(ctx, in, out)
}
func (f *faultyFile) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return f.inner.Lseek(ctx, off, whence)
}

func main() {
	flag.Int64Var(&failReadsFrom, "fail-reads-from", 0, "offset from which reads of faulty files fail")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: faultfs [-fail-reads-from BYTES] BACKING MOUNTPOINT")
		os.Exit(2)
	}
	backing, mountpoint := flag.Arg(0), flag.Arg(1)
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		fmt.Fprintf(os.Stderr, "faultfs: %s: %v\n", backing, err)
		os.Exit(1)
	}
	root := &fs.LoopbackRoot{Path: backing, Dev: uint64(st.Dev), NewNode: newNode}
	root.RootNode = newNode(root, nil, "", &st)
	server, err := fs.Mount(mountpoint, root.RootNode, &fs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther:        true,
			DirectMountStrict: true,
			FsName:            "faultfs",
			Name:              "faultfs",
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "faultfs: mount %s: %v\n", mountpoint, err)
		os.Exit(1)
	}
	fmt.Println("mounted")
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		_ = server.Unmount()
	}()
	server.Wait()
}
