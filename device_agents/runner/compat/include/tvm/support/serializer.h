/*
 * hilt: serializers for the stream in io.h. Layout: plain values as raw little-endian bytes,
 * strings and sequences as a uint64 length followed by their elements, objects with
 * Save/Load members through those members.
 */
#ifndef HILT_COMPAT_TVM_SUPPORT_SERIALIZER_H_
#define HILT_COMPAT_TVM_SUPPORT_SERIALIZER_H_

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <cstdint>
#include <map>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tvm {
namespace support {

namespace detail {

template <typename T, typename = void>
struct HasSaveLoad : std::false_type {};

template <typename T>
struct HasSaveLoad<T, std::void_t<decltype(std::declval<const T&>().Save(std::declval<Stream*>())),
                                  decltype(std::declval<T&>().Load(std::declval<Stream*>()))>>
    : std::true_type {};

template <typename T>
constexpr bool kIsRaw = std::is_trivially_copyable_v<T> && !HasSaveLoad<T>::value;

inline void WriteLength(Stream* strm, size_t n) {
  uint64_t len = static_cast<uint64_t>(n);
  strm->Write(&len, sizeof(len));
}

inline bool ReadLength(Stream* strm, uint64_t* n) { return strm->Read(n, sizeof(*n)) == sizeof(*n); }

}  // namespace detail

/*! \brief Plain values (numbers, enums, DLDataType, DLDevice): raw bytes. */
template <typename T>
struct Serializer<T, std::enable_if_t<detail::kIsRaw<T>>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const T& v) { strm->Write(&v, sizeof(T)); }
  static bool Read(Stream* strm, T* v) { return strm->Read(v, sizeof(T)) == sizeof(T); }
};

/*! \brief Objects that know how to save and load themselves. */
template <typename T>
struct Serializer<T, std::enable_if_t<detail::HasSaveLoad<T>::value>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const T& v) { v.Save(strm); }
  static bool Read(Stream* strm, T* v) { return v->Load(strm); }
};

template <>
struct Serializer<std::string> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::string& v) {
    detail::WriteLength(strm, v.size());
    if (!v.empty()) strm->Write(v.data(), v.size());
  }
  static bool Read(Stream* strm, std::string* v) {
    uint64_t n;
    if (!detail::ReadLength(strm, &n)) return false;
    v->resize(static_cast<size_t>(n));
    if (n == 0) return true;
    return strm->Read(&(*v)[0], static_cast<size_t>(n)) == n;
  }
};

template <>
struct Serializer<ffi::String> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::String& v) {
    detail::WriteLength(strm, v.size());
    if (v.size() != 0) strm->Write(v.data(), v.size());
  }
  static bool Read(Stream* strm, ffi::String* v) {
    std::string tmp;
    if (!Serializer<std::string>::Read(strm, &tmp)) return false;
    *v = ffi::String(std::move(tmp));
    return true;
  }
};

template <typename T>
struct Serializer<std::vector<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::vector<T>& v) {
    detail::WriteLength(strm, v.size());
    if constexpr (detail::kIsRaw<T>) {
      if (!v.empty()) strm->Write(v.data(), v.size() * sizeof(T));
    } else {
      for (const T& e : v) Serializer<T>::Write(strm, e);
    }
  }
  static bool Read(Stream* strm, std::vector<T>* v) {
    uint64_t n;
    if (!detail::ReadLength(strm, &n)) return false;
    v->resize(static_cast<size_t>(n));
    if constexpr (detail::kIsRaw<T>) {
      if (n == 0) return true;
      return strm->Read(v->data(), v->size() * sizeof(T)) == v->size() * sizeof(T);
    } else {
      for (T& e : *v) {
        if (!Serializer<T>::Read(strm, &e)) return false;
      }
      return true;
    }
  }
};

template <typename T>
struct Serializer<ffi::Array<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::Array<T>& v) {
    detail::WriteLength(strm, v.size());
    for (const T& e : v) Serializer<T>::Write(strm, e);
  }
  static bool Read(Stream* strm, ffi::Array<T>* v) {
    uint64_t n;
    if (!detail::ReadLength(strm, &n)) return false;
    ffi::Array<T> out;
    for (uint64_t i = 0; i < n; ++i) {
      T e;
      if (!Serializer<T>::Read(strm, &e)) return false;
      out.push_back(std::move(e));
    }
    *v = std::move(out);
    return true;
  }
};

template <typename A, typename B>
struct Serializer<std::pair<A, B>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::pair<A, B>& v) {
    Serializer<A>::Write(strm, v.first);
    Serializer<B>::Write(strm, v.second);
  }
  static bool Read(Stream* strm, std::pair<A, B>* v) {
    return Serializer<A>::Read(strm, &v->first) && Serializer<B>::Read(strm, &v->second);
  }
};

namespace detail {
template <typename M>
struct MapSerializer {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const M& m) {
    WriteLength(strm, m.size());
    for (const auto& kv : m) {
      Serializer<typename M::key_type>::Write(strm, kv.first);
      Serializer<typename M::mapped_type>::Write(strm, kv.second);
    }
  }
  static bool Read(Stream* strm, M* m) {
    uint64_t n;
    if (!ReadLength(strm, &n)) return false;
    m->clear();
    for (uint64_t i = 0; i < n; ++i) {
      typename M::key_type k;
      typename M::mapped_type val;
      if (!Serializer<typename M::key_type>::Read(strm, &k)) return false;
      if (!Serializer<typename M::mapped_type>::Read(strm, &val)) return false;
      m->emplace(std::move(k), std::move(val));
    }
    return true;
  }
};
}  // namespace detail

template <typename K, typename V>
struct Serializer<std::map<K, V>> : detail::MapSerializer<std::map<K, V>> {};

template <typename K, typename V>
struct Serializer<std::unordered_map<K, V>> : detail::MapSerializer<std::unordered_map<K, V>> {};

}  // namespace support
}  // namespace tvm

#endif  // HILT_COMPAT_TVM_SUPPORT_SERIALIZER_H_
