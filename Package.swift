// swift-tools-version:6.2
import PackageDescription

// The folders show the architecture, bottom to top:
//   C adapters (CLibPQ, CCurl, CCrypto) → HeraldCore (pure, no I/O) → HeraldSigning, HeraldPostgres, HeraldHTTP
//   (thin owners of C handles) → HeraldWorker (claim, deliver, record) → herald (the CLI).
// The operator console: HeraldConsole (pages, sessions, rules; no server library) → herald-console (SwiftNIO, its
// own executable so that `herald`'s release build never compiles SwiftNIO; `herald console` starts it).
let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "herald",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "herald", targets: ["herald"]),
        .executable(name: "herald-naive-baseline", targets: ["herald-naive-baseline"]),
        .executable(name: "herald-console", targets: ["herald-console"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.1.0"),
        // The console's HTTP server only (herald-console): never linked into herald or the worker.
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.30.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibPQ", pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"]), .brew(["libpq"])]),
        .systemLibrary(
            name: "CCurl", pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"]), .brew(["curl"])]),
        .systemLibrary(
            name: "CCrypto", pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"]), .brew(["openssl@3"])]),

        .target(name: "HeraldCore", swiftSettings: strict),
        .target(name: "HeraldSigning", dependencies: ["CCrypto", "HeraldCore"], swiftSettings: strict),
        .target(name: "HeraldPostgres", dependencies: ["CLibPQ"], swiftSettings: strict),
        .target(name: "HeraldHTTP", dependencies: ["CCurl", "HeraldCore"], swiftSettings: strict),
        .target(
            name: "HeraldWorker",
            dependencies: [
                "HeraldCore", "HeraldSigning", "HeraldPostgres", "HeraldHTTP",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "herald",
            dependencies: [
                "HeraldCore", "HeraldSigning", "HeraldPostgres", "HeraldHTTP", "HeraldWorker",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict),
        .target(
            name: "HeraldConsole",
            dependencies: ["HeraldCore", "HeraldSigning", "HeraldPostgres"],
            swiftSettings: strict),
        .executableTarget(
            name: "herald-console",
            dependencies: [
                "HeraldConsole", "HeraldCore", "HeraldPostgres",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strict),
        // The benchmark's baseline (scripts/bench): one delivery per transaction. Not shipped.
        .executableTarget(
            name: "herald-naive-baseline",
            dependencies: ["HeraldCore", "HeraldSigning", "HeraldPostgres", "HeraldHTTP"],
            swiftSettings: strict),

        .target(
            name: "HeraldTestSupport",
            dependencies: ["HeraldPostgres", "HeraldCore", "HeraldSigning"],
            path: "Tests/HeraldTestSupport",
            swiftSettings: strict),
        .testTarget(
            name: "HeraldCoreTests",
            dependencies: ["HeraldCore", "HeraldSigning"],
            swiftSettings: strict),
        .testTarget(
            name: "HeraldConsoleTests",
            dependencies: ["HeraldConsole"],
            swiftSettings: strict),
        .testTarget(
            name: "HeraldIntegrationTests",
            dependencies: ["HeraldCore", "HeraldSigning", "HeraldPostgres", "HeraldWorker", "HeraldTestSupport"],
            swiftSettings: strict),
    ]
)
