#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// OpenBLAS's `cblas_sgemm`, loaded at run time when the library is installed
/// (Debian: libopenblas0 / libopenblas-dev). The CPU backend hands large float32
/// matmuls to it and keeps its own kernels as the fallback, so nothing links against it.
final class OpenBLAS: Sendable {
    typealias SGEMM = @convention(c) (Int32, Int32, Int32, Int32, Int32, Int32, Float,
                                      UnsafePointer<Float>?, Int32, UnsafePointer<Float>?, Int32,
                                      Float, UnsafeMutablePointer<Float>?, Int32) -> Void
    typealias SetThreads = @convention(c) (Int32) -> Void

    static let candidates = ["libopenblas.so.0", "libopenblas.so", "libopenblasp.so.0", "libopenblas.dylib"]

    /// The loaded library, or nil with the reason in `loadFailure`.
    private static let loaded = load()
    static var shared: OpenBLAS? { loaded.library }
    static var loadFailure: String? { loaded.failure }

    let libraryName: String
    private let sgemmFunction: SGEMM
    private let setThreadsFunction: SetThreads?

    private init(libraryName: String, sgemm: SGEMM, setThreads: SetThreads?) {
        self.libraryName = libraryName
        self.sgemmFunction = sgemm
        self.setThreadsFunction = setThreads
    }

    private static func load() -> (library: OpenBLAS?, failure: String?) {
        // After each call OpenBLAS's workers spin for 2^28 cycles (~0.1 s) before they
        // sleep. The CPU backend's own threads run the next op meanwhile, on the same cores,
        // and lose: on a 2-core VM a FLUX forward ran 15% slower. The library reads this
        // when it is loaded; a value the user set wins.
        setenv("OPENBLAS_THREAD_TIMEOUT", "4", 0)
        for name in candidates {
            guard let handle = dlopen(name, RTLD_NOW | RTLD_LOCAL) else { continue }
            guard let symbol = dlsym(handle, "cblas_sgemm") else { continue }
            let setThreads = dlsym(handle, "openblas_set_num_threads").map { unsafeBitCast($0, to: SetThreads.self) }
            return (OpenBLAS(libraryName: name, sgemm: unsafeBitCast(symbol, to: SGEMM.self), setThreads: setThreads), nil)
        }
        return (nil, "\(candidates[0]) not found (install libopenblas0)")
    }

    func setThreadCount(_ count: Int) { setThreadsFunction?(Int32(count)) }

    /// Row-major `C = A·B (+ C)` where each operand has unit stride along one axis.
    /// Returns false when the strides do not fit BLAS or the sizes exceed Int32.
    func multiply(m: Int, n: Int, k: Int, a: MatrixOperand, b: MatrixOperand,
                  c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool) -> Bool {
        guard a.dtype == .float32, b.dtype == .float32,
              let (transA, lda) = Self.layout(a, rows: m, columns: k),
              let (transB, ldb) = Self.layout(b, rows: k, columns: n),
              max(m, n, k, ldc) < Int(Int32.max)
        else { return false }
        sgemmFunction(101, transA, transB, Int32(m), Int32(n), Int32(k), 1,
                      a.base.assumingMemoryBound(to: Float.self), Int32(lda),
                      b.base.assumingMemoryBound(to: Float.self), Int32(ldb),
                      accumulate ? 1 : 0, c, Int32(ldc))
        return true
    }

    /// CBLAS transpose flag (111 = no, 112 = yes) and leading dimension for an operand.
    private static func layout(_ operand: MatrixOperand, rows: Int, columns: Int) -> (Int32, Int)? {
        if operand.columnStride == 1 && operand.rowStride >= max(columns, 1) { return (111, operand.rowStride) }
        if operand.rowStride == 1 && operand.columnStride >= max(rows, 1) { return (112, operand.columnStride) }
        if rows == 1 && operand.columnStride == 1 { return (111, max(columns, 1)) }
        if columns == 1 && operand.rowStride == 1 { return (112, max(rows, 1)) }
        return nil
    }
}
