# A tiny Rack app: puma -C testdata/real/puma.rb testdata/real/config.ru
run ->(env) { [200, { "content-type" => "text/plain" }, ["pid=#{Process.pid} puma\n"]] }
