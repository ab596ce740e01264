#if canImport(Glibc)
import Glibc
private let systemWrite = Glibc.write
#elseif canImport(Darwin)
import Darwin
private let systemWrite = Darwin.write
#endif

/// Files written whole or not at all: the bytes go to a temporary file beside the target
/// (created exclusively), are flushed to disk, and the file is renamed over the target; on
/// any failure the temporary file is removed and the target is untouched.
public enum AtomicFile {
    /// An open temporary file.
    public struct Handle {
        let descriptor: Int32

        /// Writes every byte, retrying short writes; returns the error text on failure.
        public func write(_ bytes: UnsafeRawBufferPointer) -> String? {
            guard var pointer = bytes.baseAddress else { return nil }
            var remaining = bytes.count
            while remaining > 0 {
                let written = systemWrite(descriptor, pointer, min(remaining, 1 << 30))
                if written < 0 {
                    if errno == EINTR { continue }
                    return MappedFile.errnoText()
                }
                pointer += written
                remaining -= written
            }
            return nil
        }

        public func write(_ bytes: [UInt8]) -> String? { bytes.withUnsafeBytes { write($0) } }
    }

    /// Writes `path` through `fill` (which returns an error text, or nil when it wrote all);
    /// returns an error text, or nil once the file is in place.
    public static func write(_ path: String, fill: (Handle) -> String?) -> String? {
        let temporaryPath = "\(path).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let descriptor = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { return MappedFile.errnoText() }
        var failure = fill(Handle(descriptor: descriptor))
        if failure == nil, fsync(descriptor) != 0 { failure = MappedFile.errnoText() }
        close(descriptor)
        if failure == nil, rename(temporaryPath, path) != 0 { failure = "rename failed: \(MappedFile.errnoText())" }
        if failure != nil { unlink(temporaryPath) }
        return failure
    }
}
