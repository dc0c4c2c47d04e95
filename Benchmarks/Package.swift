// swift-tools-version:6.1
import PackageDescription

// The benchmark executable of cogen-swift. Run it in a release build, from the root:
//   swift run -c release --package-path Benchmarks cogen-bench [--quick] [--reps N]
//       [--filter SUBSTRING] [--json PATH]
let package = Package(
    name: "cogen-swift-benchmarks",
    dependencies: [
        .package(name: "cogen-swift", path: "../")
    ],
    targets: [
        .executableTarget(
            name: "cogen-bench",
            dependencies: [
                .product(name: "CogenUring", package: "cogen-swift")
            ],
            swiftSettings: [
                .enableUpcomingFeature("NonisolatedNonsendingByDefault")
            ]
        )
    ],
    swiftLanguageModes: [.v6]
)
