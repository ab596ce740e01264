#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only memory mapping of a whole file. Pages are read on first touch, so a
/// multi-gigabyte checkpoint opens instantly and is never copied.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let baseAddress: UnsafeRawPointer?
    public let size: Int

    /// Maps the regular file at `path` read-only.
    public init(path: String) throws(SafeTensorsError) {
        self.path = path
        let descriptor: Int32
        switch InputFile.openRegular(path) {
        case let .success(opened): (descriptor, size) = opened
        case let .failure(refusal): throw SafeTensorsError(path: path, .cannotOpen(refusal.reason))
        }
        defer { close(descriptor) }
        if size == 0 {
            baseAddress = nil
            return
        }
        let mapping = mmap(nil, size, PROT_READ, MAP_PRIVATE, descriptor, 0)
        guard let mapping, mapping != MAP_FAILED else {
            throw SafeTensorsError(path: path, .cannotOpen("mmap failed: \(Self.errnoText())"))
        }
        baseAddress = UnsafeRawPointer(mapping)
    }

    deinit {
        if let baseAddress { munmap(UnsafeMutableRawPointer(mutating: baseAddress), size) }
    }

    static func errnoText() -> String { String(cString: strerror(errno)) }
}
