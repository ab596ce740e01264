import Foundation

/// Peak resident memory of this process (Linux: VmHWM in /proc/self/status).
public enum PeakMemory {
    /// The most bytes this process has held resident so far (0 where /proc is missing).
    public static func residentBytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            // "VmHWM:\t    2020 kB", but "VmHWM:\t12345678 kB" once the number fills the padding.
            let digits = line.dropFirst("VmHWM:".count).split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { Int($0) }
            return (digits.first ?? 0) * 1024
        }
        return 0
    }
}
