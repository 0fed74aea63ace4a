import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;

// Runs JDBC server-prepared statements (prepareThreshold=1) through Sluice
// from two connections in turn and prints "ok" when every result is right.
// Usage: java -cp postgresql.jar:. Named <jdbc URL>
public class Named {
    public static void main(String[] args) throws Exception {
        try (Connection a = DriverManager.getConnection(args[0]);
             Connection b = DriverManager.getConnection(args[0])) {
            Connection[] conns = {a, b};
            for (int round = 0; round < 20; round++) {
                for (int i = 0; i < conns.length; i++) {
                    for (int k = 0; k < 5; k++) {
                        try (PreparedStatement ps = conns[i].prepareStatement("SELECT ?::int + " + k)) {
                            ps.setInt(1, round * 10 + i);
                            try (ResultSet rs = ps.executeQuery()) {
                                rs.next();
                                int want = round * 10 + i + k;
                                if (rs.getInt(1) != want) {
                                    throw new IllegalStateException("conn " + i + " k " + k + ": got " + rs.getInt(1) + ", want " + want);
                                }
                            }
                        }
                    }
                }
            }
        }
        System.out.println("ok");
    }
}
