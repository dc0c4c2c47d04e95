// swift-tools-version:6.1
import PackageDescription

// The benchmark executables of cogen-swift. Run them in a release build, from the root:
//   swift run -c release --package-path Benchmarks cogen-bench [--quick] [--reps N]
//       [--filter SUBSTRING] [--json PATH]
//   swift build -c release --package-path Benchmarks && Benchmarks/.build/release/echo-matrix [--full]
//
// The echo benchmark: four echo servers over loopback, measured by one load generator.
//   cogen-echo    CogenUring, one coroutine per connection
//   cogen-compat-echo  cogen's echo server ported to CogenCompat (not in the default run)
//   c-uring-echo  liburing by hand: multishot accept and recv, a provided-buffer ring
//   c-epoll-echo  level-triggered epoll, non-blocking sockets
//   nio-echo      SwiftNIO, one event loop
//   echo-load     the load generator (checks every echoed byte, records latency)
//   echo-hostile  misbehaving clients (resets, half-closes), phase by phase: does a server survive?
//   echo-matrix   runs each server pinned to CPU 0 and echo-load pinned to CPU 1
//   slow-readers  slow readers against one server: its RSS growth and a ping's latency
//
// The HTTP benchmark (issue 14): TechEmpower's plaintext test under wrk.
//   cogen-http    CogenHTTP serving /plaintext and /json
//   c-uring-http  the floor: liburing by hand, a canned response per CRLFCRLF
//   c-epoll-http  the same on edge-triggered epoll: the epoll floor
//   hb-http       Hummingbird 2.28.1's hello world (built only on request: it takes minutes,
//                 `swift build -c release --package-path Benchmarks --product hb-http`)
//   parse-bench   instructions per request-head parse (run it under callgrind)
//   http-matrix   runs them (and Debian's nginx) against wrk, server-bound under a cgroup quota
//   scripts/bench.sh builds the products it needs one by one (`--product`), never hb-http
//   unless asked (--http-full).
let cSettings: [CSetting] = [.define("_GNU_SOURCE")]

let package = Package(
    name: "cogen-swift-benchmarks",
    dependencies: [
        .package(name: "cogen-swift", path: "../"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
    ],
    targets: [
        .executableTarget(
            name: "cogen-bench",
            dependencies: [
                .product(name: "CogenUring", package: "cogen-swift"),
                .product(name: "CogenCompat", package: "cogen-swift"),
            ],
            swiftSettings: [
                .enableUpcomingFeature("NonisolatedNonsendingByDefault")
            ]
        ),

        // MARK: Echo servers
        .executableTarget(
            name: "cogen-echo",
            dependencies: [
                "EchoBenchSupport",
                .product(name: "CogenUring", package: "cogen-swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [
                .enableUpcomingFeature("NonisolatedNonsendingByDefault")
            ]
        ),
        .executableTarget(
            name: "cogen-compat-echo",
            dependencies: [
                "EchoBenchSupport",
                .product(name: "CogenCompat", package: "cogen-swift"),
                .product(name: "CogenUring", package: "cogen-swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [
                .enableUpcomingFeature("NonisolatedNonsendingByDefault")
            ]
        ),
        .target(name: "CEchoCommon", cSettings: cSettings),
        .executableTarget(
            name: "c-uring-echo",
            dependencies: ["CEchoCommon"],
            cSettings: cSettings,
            linkerSettings: [.linkedLibrary("uring")]
        ),
        .executableTarget(
            name: "c-epoll-echo",
            dependencies: ["CEchoCommon"],
            cSettings: cSettings
        ),
        .executableTarget(
            name: "nio-echo",
            dependencies: [
                "EchoBenchSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // MARK: Load and driver
        .target(name: "EchoBenchSupport", dependencies: ["CEchoLinux"]),
        .target(name: "CEchoLinux", cSettings: cSettings),
        .executableTarget(
            name: "echo-load",
            dependencies: [
                "EchoBenchSupport",
                "CEchoLinux",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "echo-hostile",
            dependencies: [
                "EchoBenchSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "slow-readers",
            dependencies: [
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "echo-matrix",
            dependencies: [
                "EchoBenchSupport",
                "CEchoLinux",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // MARK: HTTP (issue 14)
        .executableTarget(
            name: "cogen-http",
            dependencies: [
                "EchoBenchSupport",
                .product(name: "CogenHTTP", package: "cogen-swift"),
                .product(name: "CogenUring", package: "cogen-swift"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [
                .enableUpcomingFeature("NonisolatedNonsendingByDefault")
            ]
        ),
        .executableTarget(
            name: "c-uring-http",
            dependencies: ["CEchoCommon"],
            cSettings: cSettings,
            linkerSettings: [.linkedLibrary("uring")]
        ),
        .executableTarget(
            name: "c-epoll-http",
            dependencies: ["CEchoCommon"],
            cSettings: cSettings
        ),
        .executableTarget(
            name: "hb-http",
            dependencies: [
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // Instructions per request-head parse, under callgrind (see its main.swift).
        .executableTarget(
            name: "parse-bench",
            dependencies: [.product(name: "CogenHTTP", package: "cogen-swift")]
        ),
        .executableTarget(
            name: "http-matrix",
            dependencies: [
                "EchoBenchSupport",
                "CEchoLinux",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
