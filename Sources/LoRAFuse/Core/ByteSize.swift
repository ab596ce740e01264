import Foundation

/// Byte counts as people write them: `2GiB`, `512MiB`, `1.5GB`, `8G`, `123456`.
public enum ByteSize {
    /// The bytes `text` names: a non-negative number, optionally fractional, with an optional
    /// unit — B, K/KB, M/MB, G/GB, T/TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of
    /// 1024), case-insensitive; a bare `K`, `M`, `G` or `T` is binary, as most tools read it.
    /// Nil for anything else or a count past `Int`.
    public static func parse(_ text: String) -> Int? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let digits = trimmed.prefix { $0.isNumber || $0 == "." }
        let unit = trimmed.dropFirst(digits.count).trimmingCharacters(in: .whitespaces).lowercased()
        guard !digits.isEmpty, let value = Double(digits), value.isFinite, value >= 0 else { return nil }
        let multipliers: [String: Double] = [
            "": 1, "b": 1,
            "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
            "k": 0x1p10, "m": 0x1p20, "g": 0x1p30, "t": 0x1p40,
            "kib": 0x1p10, "mib": 0x1p20, "gib": 0x1p30, "tib": 0x1p40,
        ]
        guard let multiplier = multipliers[unit] else { return nil }
        let bytes = (value * multiplier).rounded()
        guard bytes < 9.2e18 else { return nil }
        return Int(bytes)
    }

    /// `bytes` for people: `2.00 GiB`, `37.7 MiB`, `512 B`.
    public static func describe(_ bytes: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes), index = 0
        while abs(value) >= 1024 && index < units.count - 1 { value /= 1024; index += 1 }
        return index == 0 ? "\(bytes) B" : String(format: value < 10 ? "%.2f %@" : "%.1f %@", value, units[index])
    }
}
