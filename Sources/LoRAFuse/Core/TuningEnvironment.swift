import Foundation
import Synchronization

/// The `LORAFUSE_*` environment variables, read in one place: a value that does not parse
/// (or lies outside its range) is ignored with one warning line on stderr naming the
/// variable, the value and what it takes, once per process; the default then applies.
/// An unknown `LORAFUSE_` name (a typo) is warned about by `warnAboutUnknownNames`.
public enum TuningEnvironment {
    /// Every variable LoRAFuse reads, with what it takes (the README's table says more).
    public static let known: [String: String] = [
        "LORAFUSE_CPU_THREADS": "an integer in 1...4096",
        "LORAFUSE_CPU_BLAS": "0 or 1",
        "LORAFUSE_CPU_AVX512": "0 or 1",
        "LORAFUSE_CPU_POOL": "0 or 1",
        "LORAFUSE_VULKAN_MATMUL": "texel, registers or tiled",
        "LORAFUSE_VULKAN_BLOCK": "an integer in 1...32",
        "LORAFUSE_VULKAN_VEC4_BLOCK": "RxC with R and C in 1...32",
        "LORAFUSE_VULKAN_ATTENTION_QUERIES": "an integer in 1...24",
        "LORAFUSE_VULKAN_TRACE": "0 or 1",
        "LORAFUSE_VULKAN_HOST_IMPORT": "0 or 1",
        "LORAFUSE_VULKAN_MAX_DEVICE_MEMORY": "a positive byte count (e.g. 2GiB, 512MiB, 3000000000)",
        "LORAFUSE_VULKAN_DISABLE_OPS": "op families separated by commas (e.g. attention,lowRankUpdate)",
        "LORAFUSE_VULKAN_LOADER": "a path to a Vulkan loader library",
        "LORAFUSE_POOL": "a path to a LoRA pool database",
        "LORAFUSE_CACHE": "a folder for caches",
    ]

    private static let warned = Mutex<Set<String>>([])

    /// Where warnings go (stderr; tests may replace it).
    nonisolated(unsafe) public static var warn: (String) -> Void = { line in
        FileHandle.standardError.write(Data("warning: \(line)\n".utf8))
    }

    static func warnOnce(_ name: String, _ value: String) {
        let first = warned.withLock { $0.insert(name).inserted }
        guard first else { return }
        warn("\(name)=\(value) is not \(known[name] ?? "a valid value"); ignored (the default applies)")
    }

    /// The variable's value parsed by `parse`, nil when unset; warns and gives nil when it does not parse.
    public static func value<T>(_ name: String, environment: [String: String] = ProcessInfo.processInfo.environment,
                                _ parse: (String) -> T?) -> T? {
        guard let text = environment[name] else { return nil }
        guard let value = parse(text.trimmingCharacters(in: .whitespaces)) else {
            warnOnce(name, text)
            return nil
        }
        return value
    }

    /// The integer value of `name` when it parses and lies in `range`; otherwise one warning line and nil.
    public static func integer(_ name: String, in range: ClosedRange<Int>,
                               environment: [String: String] = ProcessInfo.processInfo.environment) -> Int? {
        value(name, environment: environment) { Int($0).flatMap { range.contains($0) ? $0 : nil } }
    }

    /// 0/1, on/off, yes/no, true/false.
    public static func flag(_ name: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool? {
        value(name, environment: environment) { text in
            switch text.lowercased() {
            case "1", "on", "yes", "true": true
            case "0", "off", "no", "false": false
            default: nil
            }
        }
    }

    /// Warns once about each `LORAFUSE_` variable that LoRAFuse does not read.
    public static func warnAboutUnknownNames(environment: [String: String] = ProcessInfo.processInfo.environment) {
        for name in environment.keys.sorted() where name.hasPrefix("LORAFUSE_") && known[name] == nil {
            let first = warned.withLock { $0.insert(name).inserted }
            if first { warn("\(name) is not a LoRAFuse variable; ignored (known: \(known.keys.sorted().joined(separator: ", ")))") }
        }
    }
}
