import LoRAFuse

/// Percentile bootstrap intervals for scores measured in clusters (the fusion evaluation's
/// content/style pairs, or LoRAs) × seeds: each resample draws the clusters with replacement
/// and, inside each drawn cluster, its seeds with replacement (a two-stage bootstrap, so the
/// interval carries both the pair-to-pair and the seed-to-seed spread). One `Bootstrap` holds
/// the draws, so every method is resampled the same way and differences between methods are
/// paired.
public struct Bootstrap: Sendable {
    public let clusters: Int
    public let seeds: Int
    /// Per resample, the drawn (cluster, seed) indices, clusters × seeds of them.
    let draws: [[(cluster: Int, seed: Int)]]

    /// `resamples` draws over `clusters` × `seeds` scores, fixed by `seed`.
    public init(clusters: Int, seeds: Int, resamples: Int = 2000, seed: UInt64 = 0) {
        precondition(clusters >= 1 && seeds >= 1 && resamples >= 1)
        self.clusters = clusters
        self.seeds = seeds
        var random = SeededRandom(seed: seed)
        draws = (0..<resamples).map { _ in
            (0..<clusters).flatMap { _ in
                let cluster = Int.random(in: 0..<clusters, using: &random)
                return (0..<seeds).map { _ in (cluster, Int.random(in: 0..<seeds, using: &random)) }
            }
        }
    }

    /// A mean and its percentile interval.
    public struct Interval: Sendable, Equatable {
        public let mean: Double
        public let low: Double
        public let high: Double

        public init(mean: Double, low: Double, high: Double) {
            self.mean = mean
            self.low = low
            self.high = high
        }

        /// Whether the interval leaves out `value`.
        public func excludes(_ value: Double) -> Bool { value < low || value > high }
    }

    /// The mean of `values` ([cluster][seed]) and its `level` percentile interval.
    public func interval(_ values: [[Double]], level: Double = 0.95) -> Interval {
        precondition(values.count == clusters && values.allSatisfy { $0.count == seeds }, "scores must be \(clusters) × \(seeds)")
        let total = values.joined().reduce(0, +)
        let means = draws.map { draw in draw.reduce(0) { $0 + values[$1.cluster][$1.seed] } / Double(draw.count) }
        return Self.percentiles(means, mean: total / Double(clusters * seeds), level: level)
    }

    /// The mean of a − b and its interval, both resampled with the same draws (paired).
    public func difference(_ a: [[Double]], _ b: [[Double]], level: Double = 0.95) -> Interval {
        interval(zip(a, b).map { zip($0, $1).map { $0 - $1 } }, level: level)
    }

    /// Linear-interpolated percentiles (numpy's default) of the resampled means.
    static func percentiles(_ means: [Double], mean: Double, level: Double) -> Interval {
        let sorted = means.sorted()
        func quantile(_ q: Double) -> Double {
            let position = q * Double(sorted.count - 1)
            let lower = Int(position.rounded(.down)), upper = min(lower + 1, sorted.count - 1)
            return sorted[lower] + (position - Double(lower)) * (sorted[upper] - sorted[lower])
        }
        let tail = (1 - level) / 2
        return Interval(mean: mean, low: quantile(tail), high: quantile(1 - tail))
    }
}
