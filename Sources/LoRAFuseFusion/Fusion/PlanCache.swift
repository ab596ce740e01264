import Foundation
import LoRAFuse

/// Per-pair plans (K-LoRA, EST-LoRA) cached as JSON files named by the two LoRA files'
/// content hashes, so a pair is measured once. A cache that cannot be read or written only
/// costs a recomputation; a file is written under a temporary name and renamed into place.
struct PlanCache<Plan: Codable> {
    let folder: URL?

    /// `$LORAFUSE_CACHE/<name>`, else `~/.cache/lorafuse/<name>` (nil when `LORAFUSE_CACHE` is empty).
    static func defaultFolder(_ name: String) -> URL? {
        let environment = ProcessInfo.processInfo.environment
        if let root = environment["LORAFUSE_CACHE"] {
            return root.isEmpty ? nil : URL(fileURLWithPath: root).appendingPathComponent(name)
        }
        guard let home = environment["HOME"] else { return nil }
        return URL(fileURLWithPath: home).appendingPathComponent(".cache/lorafuse/\(name)")
    }

    private func file(_ contentHash: String, _ styleHash: String) -> URL? {
        folder?.appendingPathComponent("\(contentHash)-\(styleHash).json")
    }

    /// The cached plan, if there is one that decodes and passes `isCurrent`.
    func read(_ contentHash: String, _ styleHash: String, isCurrent: (Plan) -> Bool) -> Plan? {
        guard let file = file(contentHash, styleHash), let data = try? InputFile.read(file.path),
              let plan = try? JSONDecoder().decode(Plan.self, from: data), isCurrent(plan) else { return nil }
        return plan
    }

    func write(_ plan: Plan, _ contentHash: String, _ styleHash: String) {
        guard let file = file(contentHash, styleHash) else { return }
        try? FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        guard let data = try? JSONEncoder().encode(plan) else { return }
        let temporary = file.appendingPathExtension("tmp-\(ProcessInfo.processInfo.processIdentifier)")
        if (try? data.write(to: temporary)) != nil, rename(temporary.path, file.path) != 0 {
            try? FileManager.default.removeItem(at: temporary)
        }
    }
}
