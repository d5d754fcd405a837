// safetensors_lite.h - just enough of a safetensors reader for the CUDA conformance tests: the JSON
// header's tensor entries (dtype, shape, data_offsets) over the whole file read into memory. It
// trusts nothing: offsets are checked against the file size, and a malformed header fails open().
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace stlite {

struct Tensor {
    std::string dtype;
    std::vector<size_t> shape;
    const uint8_t *data = nullptr;
    size_t bytes = 0;
    size_t numel() const {
        size_t n = 1;
        for (size_t d : shape)
            n *= d;
        return n;
    }
    std::vector<uint8_t> vec() const { return std::vector<uint8_t>(data, data + bytes); }
};

class File {
  public:
    bool open(const std::string &path, std::string *err) {
        FILE *f = std::fopen(path.c_str(), "rb");
        if (!f)
            return fail(err, "cannot open");
        std::fseek(f, 0, SEEK_END);
        const long size = std::ftell(f);
        std::fseek(f, 0, SEEK_SET);
        buf_.resize(size > 0 ? (size_t)size : 0);
        const bool ok = size > 8 && std::fread(buf_.data(), 1, buf_.size(), f) == buf_.size();
        std::fclose(f);
        if (!ok)
            return fail(err, "short read");
        uint64_t hlen = 0;
        std::memcpy(&hlen, buf_.data(), 8);
        if (hlen > buf_.size() - 8)
            return fail(err, "bad header length");
        json_ = std::string((const char *)buf_.data() + 8, hlen);
        base_ = 8 + hlen;
        pos_ = 0;
        return parse_top() ? true : fail(err, "malformed header");
    }
    const Tensor *find(const std::string &name) const {
        auto it = tensors_.find(name);
        return it == tensors_.end() ? nullptr : &it->second;
    }
    // Distinct "<case>" prefixes of "<case>.<field>" names, in sorted order.
    std::vector<std::string> cases() const {
        std::set<std::string> s;
        for (const auto &kv : tensors_)
            s.insert(kv.first.substr(0, kv.first.find('.')));
        return std::vector<std::string>(s.begin(), s.end());
    }

  private:
    std::vector<uint8_t> buf_;
    std::string json_;
    size_t base_ = 0, pos_ = 0;
    std::map<std::string, Tensor> tensors_;

    static bool fail(std::string *err, const char *msg) {
        if (err)
            *err = msg;
        return false;
    }
    void ws() {
        while (pos_ < json_.size() && std::strchr(" \t\r\n", json_[pos_]))
            pos_++;
    }
    bool eat(char c) {
        ws();
        if (pos_ < json_.size() && json_[pos_] == c) {
            pos_++;
            return true;
        }
        return false;
    }
    bool str(std::string &out) {
        ws();
        if (pos_ >= json_.size() || json_[pos_] != '"')
            return false;
        out.clear();
        for (pos_++; pos_ < json_.size() && json_[pos_] != '"'; pos_++) {
            if (json_[pos_] == '\\' && pos_ + 1 < json_.size())
                pos_++;
            out += json_[pos_];
        }
        return pos_++ < json_.size();
    }
    bool num(size_t &out) {
        ws();
        const size_t start = pos_;
        out = 0;
        while (pos_ < json_.size() && json_[pos_] >= '0' && json_[pos_] <= '9')
            out = out * 10 + (size_t)(json_[pos_++] - '0');
        return pos_ > start;
    }
    bool nums(std::vector<size_t> &out) {
        out.clear();
        if (!eat('['))
            return false;
        if (eat(']'))
            return true;
        do {
            size_t v;
            if (!num(v))
                return false;
            out.push_back(v);
        } while (eat(','));
        return eat(']');
    }
    bool skip_value() { // strings and flat objects of strings (the __metadata__ block)
        std::string s;
        if (str(s))
            return true;
        if (!eat('{'))
            return false;
        if (eat('}'))
            return true;
        do {
            if (!str(s) || !eat(':') || !str(s))
                return false;
        } while (eat(','));
        return eat('}');
    }
    bool parse_top() {
        if (!eat('{'))
            return false;
        if (eat('}'))
            return true;
        do {
            std::string name;
            if (!str(name) || !eat(':'))
                return false;
            if (name == "__metadata__") {
                if (!skip_value())
                    return false;
                continue;
            }
            Tensor t;
            std::vector<size_t> offs;
            if (!eat('{'))
                return false;
            do {
                std::string key;
                if (!str(key) || !eat(':'))
                    return false;
                if (key == "dtype") {
                    if (!str(t.dtype))
                        return false;
                } else if (key == "shape") {
                    if (!nums(t.shape))
                        return false;
                } else if (key == "data_offsets") {
                    if (!nums(offs))
                        return false;
                } else {
                    return false;
                }
            } while (eat(','));
            if (!eat('}') || offs.size() != 2 || offs[0] > offs[1] || offs[1] > buf_.size() - base_)
                return false;
            t.data = buf_.data() + base_ + offs[0];
            t.bytes = offs[1] - offs[0];
            tensors_[name] = t;
        } while (eat(','));
        return eat('}');
    }
};

}  // namespace stlite
