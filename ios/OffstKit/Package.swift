// swift-tools-version:5.9
// OffstKit: the Offst wallet for Swift apps. The generated UniFFI bindings (OffstFFI, over the
// C module offst_ffiFFI), a Swift-friendly async wrapper, and the app's view models, which
// are plain Swift so that they are tested on Linux too (scripts/test-swift.sh).
//
// The generated files are not kept in git: scripts/test-swift.sh (Linux) and
// scripts/build-ios.sh (macOS, an XCFramework) copy them in from target/bindings/swift.
import PackageDescription

let package = Package(
    name: "OffstKit",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "OffstKit", targets: ["OffstKit"]),
    ],
    targets: [
        // The C header and module map from uniffi-bindgen (the module map renamed to
        // module.modulemap). On Linux the library itself comes from the linker's search path.
        .systemLibrary(name: "offst_ffiFFI", path: "Sources/offst_ffiFFI"),
        .target(
            name: "OffstFFI",
            dependencies: ["offst_ffiFFI"],
            path: "Sources/OffstFFI",
            linkerSettings: [.linkedLibrary("offst_ffi")]
        ),
        .target(name: "OffstKit", dependencies: ["OffstFFI"], path: "Sources/OffstKit"),
        .testTarget(name: "OffstKitTests", dependencies: ["OffstKit"], path: "Tests/OffstKitTests"),
    ]
)
