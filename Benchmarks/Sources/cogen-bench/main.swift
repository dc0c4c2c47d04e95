// cogen-bench: microbenchmarks of the CogenUring scheduler, run on this thread.
//
// Plain top-level code (no async main): every scheduler runs on the main thread through
// `scheduler.run()`, never inside Swift's cooperative pool.
import Glibc

let options = Options.parse(Array(CommandLine.arguments.dropFirst()))
if let count = options.memoryChild {
    exit(options.memoryFloor ? memoryFloorChild(count: count) : memoryChild(count: count))
}
exit(runBenchmarks(options))
