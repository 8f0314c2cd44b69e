// Fused CPU kernels for skip-gram and CBOW with negative sampling (Mikolov et al. 2013).
//
// One call trains on one stream of kept tokens the way word2vec.c and gensim do: one word at a time, plain
// SGD straight into the two tables, one pass over the window and the output rows per word (CBOW: per
// centre; skip-gram: per input word, see skipgram_step). Threads split the stream into contiguous parts and
// update the shared tables without locks (Hogwild, Recht et al. 2011), as word2vec.c's threads do.
//
// Negatives are drawn inside the kernel from Walker's alias table of the noise distribution with a
// counter-based generator (splitmix64, Steele et al. 2014): negative k of position i is a pure function of
// (seed, i, k), so the draws do not depend on how the stream is split over threads, and a reference
// implementation reproduces them (tests/test_word2vec_kernel.py).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <tuple>
#include <vector>

namespace {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// The noise word of draw number `counter`, from Walker's alias table (accept, alias) in O(1): the high 32
// bits of the draw pick a bucket, the low 32 bits accept it or take its alias.
inline int64_t draw_noise(uint64_t key, uint64_t counter, const double* accept, const int64_t* alias, int64_t vocab) {
  const uint64_t r = splitmix64(key + counter);
  const int64_t bucket = static_cast<int64_t>(((r >> 32) * static_cast<uint64_t>(vocab)) >> 32);
  const double u = static_cast<double>(r & 0xFFFFFFFFULL) * 0x1.0p-32;
  return u < accept[bucket] ? bucket : alias[bucket];
}

inline float dot(const float* a, const float* b, int64_t d) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < d; ++j) s += a[j] * b[j];
  return s;
}

inline void axpy(float g, const float* x, float* y, int64_t d) {
#pragma omp simd
  for (int64_t j = 0; j < d; ++j) y[j] += g * x[j];
}

inline void prefetch_row(const float* row, int64_t d) {
  for (int64_t j = 0; j < d; j += 16) __builtin_prefetch(row + j, 1);  // 16 floats: one 64-byte line
}

// The weighted logistic terms of one input vector h against a list of output rows: word2vec's inner loop.
// A term's loss is weight * -log sigmoid(+-h.o) (+ for the true word, - for a noise word); its update, with
// g = weight * lr * (label - sigmoid(h.o)), adds g o to err (h's error) and g h to o. All scores are taken
// before any row moves (they only read h, which the caller steps afterwards), so they overlap in the CPU
// instead of waiting on one another; rows are prefetched as they are added.
class Terms {
 public:
  explicit Terms(int64_t d) : d_(d) {}
  void clear() {
    rows_.clear();
    weights_.clear();
    positive_.clear();
  }
  void add(float* row, float weight, bool positive) {
    prefetch_row(row, d_);
    rows_.push_back(row);
    weights_.push_back(weight);
    positive_.push_back(positive);
  }
  double train(const float* h, float lr, bool update, float* err) {
    const size_t n = rows_.size();
    scores_.resize(n);
    for (size_t k = 0; k < n; ++k) scores_[k] = dot(h, rows_[k], d_);
    double loss = 0;
    for (size_t k = 0; k < n; ++k) {
      const float f = scores_[k];
      const float e = std::exp(-std::fabs(f));  // one exp for both the sigmoid and the loss
      const float sig = f >= 0 ? 1.f / (1.f + e) : e / (1.f + e);
      const float x = positive_[k] ? f : -f;  // -log sigmoid(x) = log1p(exp(-|x|)) + max(-x, 0)
      loss += weights_[k] * (std::log1p(e) + std::max(-x, 0.f));
      if (update) {
        const float g = ((positive_[k] ? 1.f : 0.f) - sig) * lr * weights_[k];
        axpy(g, rows_[k], err, d_);
        axpy(g, h, rows_[k], d_);
      }
    }
    return loss;
  }

 private:
  int64_t d_;
  std::vector<float*> rows_;
  std::vector<float> weights_, scores_;
  std::vector<uint8_t> positive_;
};

struct Stream {
  const int64_t* ids;
  const int64_t* sentence;
  const int64_t* radius;
  int64_t n;
  // Window of centre i: positions [lo, hi] of the same sentence within its radius.
  inline void window(int64_t i, int64_t* lo, int64_t* hi) const {
    int64_t a = std::max<int64_t>(0, i - radius[i]), b = std::min<int64_t>(n - 1, i + radius[i]);
    while (sentence[a] != sentence[i]) ++a;
    while (sentence[b] != sentence[i]) --b;
    *lo = a;
    *hi = b;
  }
};

// What both kernels read: the stream, the tables, the noise distribution's alias table and the step's key
// and rate, checked once.
struct StepInputs {
  Stream stream;
  float* U;  // input vectors (V, d)
  float* O;  // output vectors (V, d)
  const double* accept;
  const int64_t* alias;
  int64_t vocab, d;
  uint64_t key;
  float rate;

  StepInputs(const at::Tensor& ids, const at::Tensor& sentence, const at::Tensor& radius, at::Tensor& w_in,
             at::Tensor& w_out, const at::Tensor& accept_, const at::Tensor& alias_, double lr, int64_t seed) {
    TORCH_CHECK(ids.dim() == 1 && sentence.sizes() == ids.sizes() && radius.sizes() == ids.sizes(),
                "ids, sentence and radius must be 1-D of the same length");
    for (const at::Tensor* t : {&ids, &sentence, &radius, &alias_})
      TORCH_CHECK(t->scalar_type() == at::kLong && t->is_contiguous() && t->device().is_cpu(),
                  "ids, sentence, radius and alias must be contiguous int64 CPU tensors");
    TORCH_CHECK(w_in.scalar_type() == at::kFloat && w_out.scalar_type() == at::kFloat && w_in.device().is_cpu(),
                "the tables must be float32 CPU tensors");
    TORCH_CHECK(w_in.is_contiguous() && w_out.is_contiguous() && w_in.dim() == 2 && w_in.sizes() == w_out.sizes(),
                "the tables must be contiguous (V, d) of the same shape");
    TORCH_CHECK(accept_.scalar_type() == at::kDouble && accept_.is_contiguous() && accept_.size(0) == w_in.size(0) &&
                    alias_.size(0) == w_in.size(0),
                "the alias table must be float64 accept and int64 alias of length V");
    stream = {ids.data_ptr<int64_t>(), sentence.data_ptr<int64_t>(), radius.data_ptr<int64_t>(), ids.size(0)};
    U = w_in.data_ptr<float>();
    O = w_out.data_ptr<float>();
    accept = accept_.data_ptr<double>();
    alias = alias_.data_ptr<int64_t>();
    vocab = w_in.size(0);
    d = w_in.size(1);
    key = splitmix64(static_cast<uint64_t>(seed));
    rate = static_cast<float>(lr);
  }

  // Noise word number `counter` of this step.
  int64_t noise(uint64_t counter) const { return draw_noise(key, counter, accept, alias, vocab); }
};

// Loss summed over the step's terms and their count, over threads.
struct Totals {
  std::mutex lock;
  double loss = 0;
  int64_t items = 0;
  void add(double l, int64_t k) {
    std::lock_guard<std::mutex> guard(lock);
    loss += l;
    items += k;
  }
  at::Tensor tensor() const {
    at::Tensor out = at::empty({2}, at::kDouble);
    out.data_ptr<double>()[0] = loss;
    out.data_ptr<double>()[1] = static_cast<double>(items);
    return out;
  }
};

constexpr int64_t kGrain = 512;  // at least this many positions per thread task

}  // namespace

// Walker's alias table (Vose's construction) of a distribution: float64 (V,) probabilities summing to 1
// -> (accept (V,) float64, alias (V,) int64). Drawing a uniform bucket b and keeping it with probability
// accept[b], else taking alias[b], samples the distribution exactly.
std::tuple<at::Tensor, at::Tensor> alias_table(const at::Tensor& probs) {
  TORCH_CHECK(probs.dim() == 1 && probs.scalar_type() == at::kDouble && probs.is_contiguous(),
              "probs must be a contiguous float64 vector");
  const int64_t n = probs.size(0);
  at::Tensor accept = at::empty({n}, at::kDouble), alias = at::empty({n}, at::kLong);
  double* A = accept.data_ptr<double>();
  int64_t* L = alias.data_ptr<int64_t>();
  const double* P = probs.data_ptr<double>();
  std::vector<int64_t> small, large;
  for (int64_t i = 0; i < n; ++i) {
    A[i] = P[i] * static_cast<double>(n);
    L[i] = i;
    (A[i] < 1.0 ? small : large).push_back(i);
  }
  while (!small.empty() && !large.empty()) {
    const int64_t s = small.back(), l = large.back();
    small.pop_back();
    large.pop_back();
    L[s] = l;  // bucket s keeps s with probability A[s], gives the rest to l
    A[l] -= 1.0 - A[s];
    (A[l] < 1.0 ? small : large).push_back(l);
  }
  for (int64_t i : small) A[i] = 1.0;  // rounding leftovers: full buckets
  for (int64_t i : large) A[i] = 1.0;
  return {accept, alias};
}

// CBOW (word2vec.c's cbow_mean=1): for each centre with c >= 1 contexts, h = mean of the context input
// vectors, logistic terms of h against the centre's output vector (label 1) and `negative` noise words
// (label 0); every context vector then gets the full error of h (full_context_update, as word2vec.c and
// gensim) or 1/c of it (the exact gradient of the mean).
// Returns float64 [loss summed over centres, centres with at least one context].
at::Tensor cbow_step(const at::Tensor& ids, const at::Tensor& sentence, const at::Tensor& radius, at::Tensor w_in,
                     at::Tensor w_out, const at::Tensor& accept, const at::Tensor& alias, int64_t negative, double lr,
                     int64_t seed, bool full_context_update, bool update) {
  const StepInputs in(ids, sentence, radius, w_in, w_out, accept, alias, lr, seed);
  const Stream& s = in.stream;
  const int64_t d = in.d;
  Totals totals;
  at::parallel_for(0, s.n, kGrain, [&](int64_t begin, int64_t end) {
    std::vector<float> h(d), err(d);
    Terms terms(d);
    double loss = 0;
    int64_t items = 0;
    for (int64_t i = begin; i < end; ++i) {
      int64_t lo, hi;
      s.window(i, &lo, &hi);
      const int64_t count = hi - lo;  // contexts: the window without the centre
      if (count == 0) continue;
      const int64_t word = s.ids[i];
      terms.clear();
      terms.add(in.O + word * d, 1.f, true);
      for (int64_t k = 0; k < negative; ++k) {
        const int64_t noise = in.noise(static_cast<uint64_t>(i * negative + k));
        if (noise != word) terms.add(in.O + noise * d, 1.f, false);  // as word2vec.c: the true word is no negative
      }
      std::fill(h.begin(), h.end(), 0.f);
      std::fill(err.begin(), err.end(), 0.f);
      for (int64_t t = lo; t <= hi; ++t)
        if (t != i) axpy(1.f, in.U + s.ids[t] * d, h.data(), d);
      const float inv = 1.f / static_cast<float>(count);
      for (int64_t j = 0; j < d; ++j) h[j] *= inv;
      loss += terms.train(h.data(), in.rate, update, err.data());
      if (update) {
        const float share = full_context_update ? 1.f : inv;
        for (int64_t t = lo; t <= hi; ++t)
          if (t != i) axpy(share, err.data(), in.U + s.ids[t] * d, d);
      }
      ++items;
    }
    totals.add(loss, items);
  });
  return totals.tensor();
}

// Skip-gram, one input word at a time: the input vector u_t of position t is scored against the output
// vector of every centre whose window holds t (label 1; c_t pairs) and against m = negative *
// ceil(c_t / pairs_per_draw) noise words drawn for t (label 0), each weighted c_t * negative / m, which
// keeps word2vec's loss in expectation (each of its c_t pairs has `negative` noise terms) with fewer
// draws; u_t takes its error after all of its terms.
// Returns float64 [loss summed over pairs, pairs].
at::Tensor skipgram_step(const at::Tensor& ids, const at::Tensor& sentence, const at::Tensor& radius, at::Tensor w_in,
                         at::Tensor w_out, const at::Tensor& accept, const at::Tensor& alias, int64_t negative,
                         int64_t window, int64_t pairs_per_draw, double lr, int64_t seed, bool update) {
  TORCH_CHECK(pairs_per_draw >= 1 && window >= 1, "pairs_per_draw and window must be >= 1");
  const StepInputs in(ids, sentence, radius, w_in, w_out, accept, alias, lr, seed);
  const Stream& s = in.stream;
  const int64_t d = in.d;
  Totals totals;
  at::parallel_for(0, s.n, kGrain, [&](int64_t begin, int64_t end) {
    std::vector<float> err(d);
    Terms terms(d);
    double loss = 0;
    int64_t items = 0;
    for (int64_t t = begin; t < end; ++t) {
      terms.clear();
      int64_t pairs = 0;
      const int64_t lo = std::max<int64_t>(0, t - window), hi = std::min<int64_t>(s.n - 1, t + window);
      for (int64_t i = lo; i <= hi; ++i) {
        // t is a context of centre i when it is within i's radius, in i's sentence
        if (i == t || s.sentence[i] != s.sentence[t] || std::abs(i - t) > s.radius[i]) continue;
        terms.add(in.O + s.ids[i] * d, 1.f, true);
        ++pairs;
      }
      if (pairs == 0) continue;
      const int64_t draws = negative * ((pairs + pairs_per_draw - 1) / pairs_per_draw);
      const float weight = static_cast<float>(pairs * negative) / static_cast<float>(draws);
      for (int64_t k = 0; k < draws; ++k)
        terms.add(in.O + in.noise(static_cast<uint64_t>(t * negative * 2 * window + k)) * d, weight,
                  false);
      float* u = in.U + s.ids[t] * d;
      std::fill(err.begin(), err.end(), 0.f);
      loss += terms.train(u, in.rate, update, err.data());
      if (update) axpy(1.f, err.data(), u, d);
      items += pairs;
    }
    totals.add(loss, items);
  });
  return totals.tensor();
}

TORCH_LIBRARY(nlp_ssl_word2vec, m) {
  m.def("alias_table(Tensor probs) -> (Tensor, Tensor)");
  m.def("cbow_step(Tensor ids, Tensor sentence, Tensor radius, Tensor(a!) w_in, Tensor(b!) w_out, Tensor accept, "
        "Tensor alias, int negative, float lr, int seed, bool full_context_update, bool update) -> Tensor");
  m.def("skipgram_step(Tensor ids, Tensor sentence, Tensor radius, Tensor(a!) w_in, Tensor(b!) w_out, "
        "Tensor accept, Tensor alias, int negative, int window, int pairs_per_draw, float lr, int seed, bool update) -> Tensor");
  m.impl("alias_table", c10::DispatchKey::CPU, TORCH_FN(alias_table));
  m.impl("cbow_step", c10::DispatchKey::CPU, TORCH_FN(cbow_step));
  m.impl("skipgram_step", c10::DispatchKey::CPU, TORCH_FN(skipgram_step));
}
