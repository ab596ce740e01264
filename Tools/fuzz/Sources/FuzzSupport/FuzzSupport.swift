import Foundation

/// A per-process scratch folder: parsers that read paths get the fuzz input as a file.
public enum FuzzScratch {
    public static let folder: URL = {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("lorafuse-fuzz-\(getpid())")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }()

    /// Writes `bytes` to `name` in the scratch folder and returns its path.
    public static func file(_ name: String, _ bytes: UnsafeRawBufferPointer) -> String {
        let url = folder.appendingPathComponent(name)
        FileManager.default.createFile(atPath: url.path, contents: Data(bytes))
        return url.path
    }

    /// Removes `name` from the scratch folder (for optional files).
    public static func remove(_ name: String) {
        try? FileManager.default.removeItem(at: folder.appendingPathComponent(name))
    }
}

/// The input split at its first NUL byte: (before, after), for targets that read two files.
public func splitAtNull(_ bytes: UnsafeRawBufferPointer) -> (UnsafeRawBufferPointer, UnsafeRawBufferPointer) {
    guard let index = bytes.firstIndex(of: 0) else { return (bytes, UnsafeRawBufferPointer(start: nil, count: 0)) }
    return (UnsafeRawBufferPointer(rebasing: bytes[..<index]), UnsafeRawBufferPointer(rebasing: bytes[(index + 1)...]))
}
